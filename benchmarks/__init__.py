"""Benchmarks and fault-injection runs: `python -m benchmarks.<name>`."""
