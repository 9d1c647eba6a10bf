"""Live streams for clients (issue 14): the per-user event log (events) and the stream server."""
