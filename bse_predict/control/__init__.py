"""The control plane: signed messages and the state machine (core); its Kafka and Redis plane (adapter)."""
