"""Watching the served models live: outcomes settled by the candles that follow, rolling scores,
feature drift, and the champion/challenger test."""

from __future__ import annotations

from pydantic import Field

from configs.base import FrozenBlock

__all__ = ["OutcomesConfig", "LiveMetricsConfig", "ChallengerConfig", "DriftConfig"]

class OutcomesConfig(FrozenBlock):
    """Live outcomes: every published prediction is settled by the candles that follow it."""

    enabled: bool = True
    settled_retain_hours: int = Field(720, gt=0)


class LiveMetricsConfig(FrozenBlock):
    """Rolling live scores per version, arm and target, and the worker's Prometheus endpoint."""

    windows_hours: tuple[int, ...] = (24, 168)
    bucket_minutes: int = Field(60, gt=0)
    calibration_bins: int = Field(10, gt=1)
    metrics_port: int = Field(0, ge=0, le=65535)
    refresh_s: float = Field(15.0, gt=0)
    flush_s: float = Field(5.0, ge=0, description="score sums are kept in process and added to Redis this often "
                                                  "(and at stop); 0 = after every batch")


class ChallengerConfig(FrozenBlock):
    """The always-valid champion/challenger test on paired log-loss differences."""

    enabled: bool = True
    auto_promote: bool = False
    watch_after_promotion: bool = Field(
        True, description="an automatic promote keeps the replaced version as the shadow: the test goes on "
                          "and rolls back a live regression")
    alpha: float = Field(0.05, gt=0, lt=1)
    loss_clip_nats: float = Field(5.0, gt=0)
    issued_by: str = "auto-challenger"
    retain_hours: int = Field(720, gt=0, description="a version pair's evidence expires this long after its last pair")
    max_pairs: int = Field(20_000, gt=0, description="a test with no verdict after this many pairs ends inconclusive: "
                                                     "shadow off (a challenger is dropped, a promoted version kept)")


class DriftConfig(FrozenBlock):
    """Per-feature PSI between the training distribution and the live one."""

    enabled: bool = True
    psi_threshold: float = Field(0.25, gt=0)
    min_rows: int = Field(500, gt=0)
    check_every_rows: int = Field(500, gt=0)
    window_days: int = Field(7, gt=0)

