"""Trading statistics of an account over a period: realized P&L, trades, costs, holding
periods (GET /api/v1/stats, docs/api/STATS.md)."""
