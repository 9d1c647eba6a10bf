"""Admin market-data subscriptions: SQL as the truth, mirrored to the relayer's desired set."""
