"""Starters: the `keel` CLI and the Python API that scripts use to start and steer runs."""
