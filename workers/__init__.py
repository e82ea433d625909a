"""The worker process: configuration, logging, metrics, and every workflow and activity it registers."""
