"""``bse-predict retrain``: train on the archive, gate against the live version, shadow; its schedule."""

from __future__ import annotations

from typing import Literal

from croniter import croniter
from pydantic import Field, field_validator

from configs.base import FrozenBlock

__all__ = ["RetrainGateConfig", "RetrainConfig", "RETRAIN_TRIGGERS"]

RETRAIN_TRIGGERS = ("drift", "live_regression", "challenger_worse")
"""The ``control.events`` that may start a retrain in ``--schedule`` mode (``bse_predict.retrain.schedule``)."""


class RetrainGateConfig(FrozenBlock):
    """The new version against the live one on the holdout: paired log losses, block bootstrap."""

    confidence_level: float = Field(0.95, gt=0, lt=1)
    block_days: int = Field(3, ge=1, description="bootstrap blocks of whole UTC days; checked >= the label horizon")
    samples: int = Field(2000, ge=100)
    max_loss_increase_nats: float = Field(
        0.0, description="refused when the interval's lower bound of (new - live) mean log loss is above this; "
                         "negative: the new version must be better by at least that much")
    seed: int = 0


class RetrainConfig(FrozenBlock):
    """One retrain and the scheduler (docs/operations.md, "Retraining")."""

    archive: tuple[str, ...] = Field((), description="candle files or directories (the archive); empty: refused")
    symbols: tuple[str, ...] = ()
    months: int = Field(6, ge=1, le=120)
    holdout_hours: int = Field(720, ge=1)
    purge_hours: int | None = Field(None, ge=0, description="null: market.horizon_hours; checked >= it")
    min_holdout_rows: int = Field(200, ge=1)
    gate: RetrainGateConfig = RetrainGateConfig()
    version_prefix: str = Field("r", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,40}$")
    keep_versions: int = Field(10, ge=0, description="0: never prune")
    shadow_wait_s: float = Field(60.0, gt=0)
    issued_by: str = Field("auto-retrain", min_length=1, max_length=128)
    schedule: str | None = Field("0 3 * * 0", description="cron, UTC; null: only the triggers")
    triggers: tuple[Literal["drift", "live_regression", "challenger_worse"], ...] = ("drift", "live_regression")
    min_interval_hours: float = Field(24.0, ge=0)
    ops_chat: str | None = Field(None, description="a Telegram chat id for a short note per step (TELEGRAM_BOT_TOKEN)")

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not croniter.is_valid(value) or len(value.split()) != 5:
            raise ValueError(f"{value!r} is not a five-field cron expression (minute hour day month weekday)")
        return value
