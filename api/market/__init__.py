"""The virtual market's rules: tick sizes, price limits, costs and the trading day."""
