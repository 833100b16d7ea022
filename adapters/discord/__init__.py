"""The Discord adapter (issue 20): a thin discord.py bot over the jobs client.

Skeleton so far: client setup pointed at real Discord or the loopback stand-in
(`standins/discord`), slash command registration, and `/balance` answered ephemerally through
the jobs client. Media commands, buttons, live progress and the `deliver-discord` queue are to
come (see issue 20).
"""
