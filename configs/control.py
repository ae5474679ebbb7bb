"""The control plane: message freshness and size, polling, retries, the breakers, and the keys that
sign control messages (``BSE_CONTROL_KEYS``)."""

from __future__ import annotations

import re

from pydantic import Field

from configs.base import FrozenBlock

__all__ = ["MIN_CONTROL_SECRET_CHARS", "CONTROL_KEY_ID_PATTERN", "parse_control_keys", "BreakerConfig",
           "ControlConfig"]

MIN_CONTROL_SECRET_CHARS = 32  # an HMAC-SHA256 key: 32 bytes is the hash's own size (RFC 2104)
CONTROL_KEY_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


def parse_control_keys(text: str) -> dict[str, str]:
    """``BSE_CONTROL_KEYS`` (``id=secret,id2=secret2``) as {key id: secret}; ValueError naming the entry
    (never the secret) that is not ``id=secret`` with a valid id and a secret of 32 characters or more.
    A secret may hold ``=`` but not ``,``; spaces around entries are ignored."""
    keys: dict[str, str] = {}
    for number, entry in enumerate((e.strip() for e in text.split(",")), start=1):
        if not entry:
            continue
        key_id, sep, secret = entry.partition("=")
        key_id = key_id.strip()
        if not sep or not re.fullmatch(CONTROL_KEY_ID_PATTERN, key_id):
            raise ValueError(f"BSE_CONTROL_KEYS entry {number} must be id=secret, the id 1-64 letters, digits, "
                             "'.', '_' or '-'")
        if key_id in keys:
            raise ValueError(f"BSE_CONTROL_KEYS names key {key_id!r} twice")
        if len(secret) < MIN_CONTROL_SECRET_CHARS:
            raise ValueError(f"BSE_CONTROL_KEYS key {key_id!r} is shorter than {MIN_CONTROL_SECRET_CHARS} "
                             "characters (`bse-predict control rotate` makes one)")
        keys[key_id] = secret
    return keys


class BreakerConfig(FrozenBlock):
    """The circuit breaker of every served model (bse_predict/serving/breaker.py)."""

    window_calls: int = Field(20, gt=0)
    failures_to_open: int = Field(3, gt=0)
    latency_budget_ms: float = Field(250.0, gt=0)
    open_s: float = Field(10.0, ge=0)
    probes_to_close: int = Field(2, gt=0)


class ControlConfig(FrozenBlock):
    """The control plane: message freshness and size, how often workers look for a new state, how
    transient Redis and Kafka faults are retried, the breakers."""

    max_age_s: float = Field(300.0, gt=0)
    max_future_s: float = Field(30.0, ge=0)
    max_message_bytes: int = Field(8192, gt=0)
    poll_interval_s: float = Field(0.2, gt=0)
    tick_interval_s: float = Field(1.0, gt=0)
    retry_initial_s: float = Field(0.1, gt=0)
    retry_max_s: float = Field(5.0, gt=0)
    io_timeout_s: float = Field(5.0, gt=0)
    breaker: BreakerConfig = BreakerConfig()

