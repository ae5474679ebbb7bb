"""``bse-predict dashboard``: where it listens, who may read it, how much it remembers (docs/dashboard.md)."""

from __future__ import annotations

import ipaddress

from pydantic import Field, SecretStr, field_validator

from configs.base import FrozenBlock

__all__ = ["DashboardConfig", "is_loopback"]


def is_loopback(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 or ::1: a host only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class DashboardConfig(FrozenBlock):
    """The web dashboard. It binds to a loopback address unless ``token`` is set (environment only:
    ``BSE_DASHBOARD_TOKEN``); with a token, every request must carry it.

    Memory is bounded by ``max_symbols`` times the per-symbol deques (``history_hours`` of calls and
    outcomes, ``history_hours + chart_extra_hours`` of candles), plus ``recent_events`` control events
    and dead letters and ``outcome_keys`` outcome keys."""

    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(8050, ge=1, le=65535)
    token: SecretStr | None = Field(None, description="a secret: only BSE_DASHBOARD_TOKEN sets it")
    lookback_hours: int = Field(168, gt=0, description="how far back the topics are read at start-up")
    history_hours: int = Field(168, gt=0, description="calls (and their outcomes) kept per symbol")
    chart_extra_hours: int = Field(72, ge=0, description="candles kept beyond history_hours, so the oldest call's "
                                                         "horizon is on the chart")
    max_symbols: int = Field(1000, gt=0, description="symbols kept; the one quiet longest is dropped first")
    recent_events: int = Field(200, gt=0, description="control events and dead letters kept each")
    outcome_keys: int = Field(100_000, gt=0, description="outcome keys remembered to count a re-published one once")
    poll_timeout_ms: int = Field(500, gt=0)

    @field_validator("token")
    @classmethod
    def _empty_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value() else None
