"""adapters/telegram."""
