"""Telegram bot conversations through the Bot API stand-in on the real dev stack."""
