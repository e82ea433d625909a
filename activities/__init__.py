"""Activities: every side effect of the platform (LLM calls, tools, compensations), each idempotent."""
