"""adapters/web."""
