"""Temporal activities: thin, idempotent wrappers over store/, comfy/ and image operations."""
