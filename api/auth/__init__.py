"""Accounts and tokens: register and login (rate limited), refresh (rotated) and logout, the
current user."""
