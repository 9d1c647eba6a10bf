"""The relayer: holds the single upstream market-data connection and relays it into Redis.

Run it with `python -m relayer`; see docs/RELAYER.md. The API imports only `relayer.bus` from
this package.
"""
