"""Pure rules and models of StationThis: no I/O, deterministic, safe in the workflow sandbox."""
