"""The account summary and the portfolio: positions valued at live quotes, and P&L."""
