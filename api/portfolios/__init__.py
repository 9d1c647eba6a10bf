"""Several portfolios per user: the portfolios' CRUD, and the `X-Portfolio-Id` header that tells
every account-scoped route which portfolio's account to act on (docs/api/PORTFOLIOS.md)."""
