"""Shared test configuration. Service fixtures live in tests/fixtures/, one module per service."""

pytest_plugins: list[str] = [
    "tests.fixtures.stack",
    "tests.fixtures.comfy",
    "tests.fixtures.telegram",
    "tests.fixtures.devstack",
]
