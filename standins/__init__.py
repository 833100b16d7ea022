"""Loopback stand-ins for the outside services StationThis talks to, for tests and offline runs."""
