"""Accounts and tokens: register, login (rate limited), refresh, the current user."""
