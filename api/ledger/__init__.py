"""Cash accounts and their append-only ledger."""
