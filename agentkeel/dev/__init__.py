"""Tools around the platform, not its core: the offline LLM provider, the dev-server runner,
the codec server."""
