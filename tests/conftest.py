"""Shared test fixtures. Each group lives in a plugin module under `tests/fixtures/`."""

import os

# The travel example is an app like a user's: every process a test starts (`keel llm`, `keel worker`,
# the CLI in-process) loads it from KEEL_APPS, as a user's project would from keel.toml.
os.environ.setdefault("KEEL_APPS", "agentkeel.examples.travel")

pytest_plugins = [
    "tests.fixtures.temporal",
    "tests.fixtures.llm",
    "tests.postgres_server",
]
