"""Fixtures of the integration tests beyond those of tests/conftest.py."""

from tests.support.secure_stack import secure_stack  # noqa: F401  (the session's secure Kafka and Redis)
