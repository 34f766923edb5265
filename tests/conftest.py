"""Shared pytest configuration: fixtures live in tests/fixtures/ and are loaded as plugins."""

pytest_plugins = [
    "tests.fixtures.venus",
    "tests.fixtures.velib",
    "tests.fixtures.canlink",
    "tests.fixtures.procs",
]
