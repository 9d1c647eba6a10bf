"""Live quotes read from Redis, and the relayer's health as clients see it."""
