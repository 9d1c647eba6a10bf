"""Performance: the daily account snapshots the fills worker takes at each close
(`snapshots`), and the portfolio history read from them (`service`, docs/api/PERFORMANCE.md)."""
