"""The Discord adapter (issue 20): a thin discord.py bot over the jobs client.

Slash commands and persistent result buttons (commands.py, views.py), live progress on the
deferred response (progress.py) and the `deliver-discord` delivery worker (delivery.py), run
together by `stationthis discord-bot` (bot.py); README.md says how to run it against Discord.
"""
