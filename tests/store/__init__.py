"""Store tests: repositories against a real MongoDB-compatible server (secantusd-py)."""
