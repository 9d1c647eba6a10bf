"""The fills worker: fills resting limit orders from the tick stream (`python -m api.fills`)."""
