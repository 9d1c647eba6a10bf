"""The account's executions (체결 내역): every fill of every order, as one history to read."""
