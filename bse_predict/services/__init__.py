"""The local Kafka and Redis of ``bse-predict services`` (single node, three brokers, secure), without Docker."""
