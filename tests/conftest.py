"""Shared test fixtures. Each group lives in a plugin module under `tests/fixtures/`."""

pytest_plugins = [
    "tests.fixtures.temporal",
    "tests.fixtures.llm",
]
