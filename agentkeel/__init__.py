"""agentkeel: durable workflows for LLM agents on Temporal.

This package holds what every process shares: the contracts (pydantic models),
names (task queues, activity names, search attributes), settings and logging.
"""

__version__ = "0.1.0"
