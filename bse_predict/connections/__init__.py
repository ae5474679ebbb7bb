"""Kafka and Redis clients built from the settings, transient-fault retries, and the contract's topics."""
