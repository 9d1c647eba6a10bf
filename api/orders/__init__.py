"""Virtual orders: placement, execution, cancel and modify, and their HTTP routes."""
