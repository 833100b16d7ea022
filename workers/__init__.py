"""Process entry points: Temporal workers per task queue and the dev-stack launcher."""
