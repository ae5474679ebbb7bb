"""The control plane: signed messages, their verification, version checks and the state machine (core);
the Redis state store, the state log, reporting, the sender and the plane that coordinates them (adapters)."""
