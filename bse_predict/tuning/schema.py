"""How a search runs (:class:`TuneOptions`) and what it found (:class:`TuneReport`, written as JSON)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bse_predict.evaluation.calibration import DEFAULT_CALIBRATOR, CalibratorName
from bse_predict.evaluation.schema import Interval

__all__ = ["TuneOptions", "OuterScore", "TuneReport"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TuneOptions(_Frozen):
    """One search. The pooled rows are cut into ``folds`` expanding walk-forward test blocks (as
    ``evaluate`` cuts them); the search sees only the first ``folds - outer_folds`` of them, purged from
    the rest, and the last ``outer_folds`` score the result."""

    family: str
    study_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    trials: int = Field(20, ge=1)
    folds: int = Field(4, ge=2)
    outer_folds: int = Field(1, ge=1)
    initial_train_fraction: float = Field(0.5, gt=0.0, lt=1.0)
    embargo_hours: int = Field(24, ge=0)
    calibration_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    calibrator: CalibratorName = DEFAULT_CALIBRATOR
    max_rows_per_symbol: int | None = Field(None, gt=0)
    prune: bool = True
    """Stop a trial early when its running inner log loss is worse than the median of earlier trials."""
    seed: int = 0
    bootstrap_samples: int = Field(1000, ge=10)
    bootstrap_block_days: int | None = Field(None, ge=1)
    """Days per bootstrap block; ``None``: the label horizon rounded up to whole days."""
    confidence_level: float = Field(0.95, gt=0.5, lt=1.0)

    @model_validator(mode="after")
    def _inner_folds_left(self) -> TuneOptions:
        if self.outer_folds >= self.folds:
            raise ValueError(f"outer_folds ({self.outer_folds}) must be fewer than folds ({self.folds}): "
                             "the search needs at least one earlier fold")
        return self


class OuterScore(_Frozen):
    """One target on the outer folds: mean log loss per row of the tuned and the configured (default)
    parameters and of climatology, each fit on the same training rows; differences with block-bootstrap
    intervals (negative: the first is better)."""

    target: str
    rows: int
    effective_rows: int
    """Label windows on the outer rows that share no candle."""
    outer_start_ms: int
    """The first outer test row's open time: every row the search read for this target, its label window
    included, ends before it."""
    log_loss_tuned: float
    log_loss_default: float
    log_loss_climatology: float
    tuned_minus_default: Interval
    tuned_minus_climatology: Interval
    default_minus_climatology: Interval


class TuneReport(_Frozen):
    family: str
    study_name: str
    study_file: str
    config_file: str
    targets: tuple[str, ...]
    options: TuneOptions
    trials_total: int
    trials_complete: int
    trials_pruned: int
    best_trial: int
    best_params: dict[str, Any]
    """The searched parameters of the best trial."""
    best_inner_log_loss: float
    """Its objective: mean over targets of the pooled log loss on the inner test blocks."""
    default_inner_log_loss: float | None
    """The same for the configured parameters (the first trial of the study), when it completed."""
    climatology_inner_log_loss: float
    outer: tuple[OuterScore, ...]
