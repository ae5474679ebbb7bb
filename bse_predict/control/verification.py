"""Verifying a control message before anything acts on it: the keys it is verified with, the
check itself (size, JSON, signature, freshness: :func:`~bse_predict.control.messages.verify_message`)
and the refusal that goes on ``control.events`` when it fails. Pure: the time is passed in.
"""

from __future__ import annotations

from datetime import datetime

from configs.settings import ControlConfig, Settings, parse_control_keys
from bse_predict.control.messages import ControlKeys, ControlMessage, ControlRefused, verify_message
from bse_predict.control.state_machine import ControlEvent

__all__ = ["control_keys", "verify", "refusal_event"]

_MAX_REASON = 500  # characters of a refusal's reason on control.events


def control_keys(settings: Settings) -> ControlKeys | None:
    """The keys this process verifies control messages with: BSE_CONTROL_SECRET (id BSE_CONTROL_KEY_ID)
    and those of BSE_CONTROL_KEYS; None without a BSE_CONTROL_SECRET (every message is refused)."""
    secret = settings.control_secret.get_secret_value() if settings.control_secret is not None else ""
    if not secret:
        return None
    extra = parse_control_keys(settings.control_keys.get_secret_value()) if settings.control_keys is not None else {}
    return ControlKeys.of(settings.control_key_id, secret, extra)


def verify(raw: bytes | None, keys: ControlKeys | None, config: ControlConfig, now: datetime) -> ControlMessage:
    """The control message ``raw``, checked against ``config``'s size and freshness limits and ``keys``;
    :class:`ControlRefused` when it is not one (no keys: every message is refused)."""
    return verify_message(raw, keys, now, config.max_age_s, config.max_future_s, config.max_message_bytes)


def refusal_event(refusal: ControlRefused, now: datetime) -> ControlEvent:
    """What ``control.events`` says about a message refused before it reached the state machine."""
    return ControlEvent(status="refused", reason=f"{refusal.kind}: {refusal.reason}"[:_MAX_REASON], at=now,
                        id=refusal.message_id, command=refusal.command)
