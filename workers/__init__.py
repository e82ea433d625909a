"""The worker process: configuration, logging, metrics, and the registration of every workflow and activity."""
