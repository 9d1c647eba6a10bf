"""Watchlists: a user's named lists of instruments, answered with live quotes."""
