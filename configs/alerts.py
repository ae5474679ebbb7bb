"""``bse-predict alerts``: which calls reach Telegram, when, and how politely."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from configs.base import FrozenBlock

__all__ = ["AlertThreshold", "AlertsConfig"]

class AlertThreshold(FrozenBlock):
    """When a target's call is worth a Telegram alert: both conditions must hold."""

    min_confidence: float = Field(0.62, ge=0.5, le=1.0)  # on the contract's confidence
    min_probability: float = Field(0.4, ge=0.0, le=1.0)  # on p_up or p_down, whichever is called


class AlertsConfig(FrozenBlock):
    """``bse-predict alerts``: what is sent to Telegram, when, and how politely."""

    thresholds: dict[str, AlertThreshold] = {
        "1%": AlertThreshold(min_probability=0.50),
        "2%": AlertThreshold(min_probability=0.40),
        "5%": AlertThreshold(min_probability=0.25),
    }  # a target not listed is never alerted
    cooldown_hours: float = Field(12.0, ge=0.0)
    degraded: Literal["flag", "hold"] = "flag"
    chats: tuple[str, ...] = ()
    digest: bool = True
    digest_every_hours: int = Field(1, gt=0)
    summary: bool = True
    summary_window_days: int = Field(7, gt=0)
    summary_min_samples: int = Field(20, gt=0)
    chart: bool = True
    rate_per_chat_per_s: float = Field(1.0, gt=0)
    burst_per_chat: int = Field(3, gt=0)
    rate_total_per_s: float = Field(30.0, gt=0)
    max_attempts: int = Field(8, gt=0)
    backoff_initial_s: float = Field(1.0, gt=0)
    backoff_max_s: float = Field(60.0, gt=0)
    request_timeout_s: float = Field(30.0, gt=0)
    max_message_chars: int = Field(4096, ge=200, le=4096)
    state_ttl_hours: int = Field(240, gt=0)
    group_id: str = "bse-predict-alerts"
    start_from: Literal["earliest", "latest"] = "latest"
    poll_timeout_ms: int = Field(1000, gt=0)
    session_timeout_s: float = Field(10.0, ge=6.0)
    claim_ttl_s: float = Field(30.0, ge=1.0)
    claim_poll_ms: int = Field(200, gt=0)
    lease_ttl_s: float = Field(15.0, ge=1.0)
    stale_after_hours: float = Field(3.0, gt=0)
    explain: bool = True
    explain_timeout_s: float = Field(5.0, gt=0)

    def chat_ids(self, env_chat_ids: str | None) -> tuple[str, ...]:
        """TELEGRAM_CHAT_ID (comma-separated) first, then ``chats``; duplicates dropped."""
        listed = [c.strip() for c in (env_chat_ids or "").split(",")] + [c.strip() for c in self.chats]
        return tuple(dict.fromkeys(c for c in listed if c))

