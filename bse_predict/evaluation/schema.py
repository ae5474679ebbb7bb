"""The schema of ``metrics.json``: what ``bse-predict evaluate`` measured, machine-readable.

One :class:`EvaluationReport` per run. Probabilities are in the class order
of :data:`bse_predict.labels.first_touch.CLASS_NAMES` (up, down, none); times are epoch
milliseconds (UTC); a metric that is undefined on a group (an AUC with one
class, a precision with no calls) is ``null``, never NaN.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bse_predict.evaluation.calibration import DEFAULT_CALIBRATOR, CalibratorName

__all__ = [
    "SCHEMA_VERSION",
    "EvaluationOptions",
    "ThresholdMetrics",
    "ReliabilityBin",
    "GroupMetrics",
    "Timings",
    "ModelEvaluation",
    "Interval",
    "AucIntervals",
    "LeakageFinding",
    "PairedComparison",
    "FoldBoundary",
    "TargetEvaluation",
    "DataSpan",
    "LeakageCheck",
    "EvaluationReport",
]

SCHEMA_VERSION = "1"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EvaluationOptions(_Frozen):
    """How one evaluation runs (the market settings come from :class:`configs.settings.Settings`)."""

    families: tuple[str, ...] | None = None
    """Families to evaluate; ``None``: every enabled family of ``settings.models``."""
    folds: int = Field(5, ge=1)
    initial_train_fraction: float = Field(0.5, gt=0.0, lt=1.0)
    """Share of the pooled rows (oldest first) that only ever trains."""
    embargo_hours: int = Field(24, ge=0)
    calibration_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    """Newest share of each fold's training rows held out to fit the calibrator."""
    calibrator: CalibratorName = DEFAULT_CALIBRATOR
    thresholds: tuple[float, ...] = (0.55, 0.60, 0.65)
    """Confidence thresholds, confidence = max(p_up, p_down) / (p_up + p_down)."""
    reliability_bins: int = Field(10, ge=2)
    bootstrap_samples: int = Field(1000, ge=10)
    bootstrap_block_days: int | None = Field(None, ge=1)
    """Days per bootstrap block; ``None``: the label horizon rounded up to whole days."""
    confidence_level: float = Field(0.95, gt=0.5, lt=1.0)
    seed: int = 0
    reference_family: str = "random_forest"
    """Every model is compared with this one in the paired bootstrap."""
    max_rows_per_symbol: int | None = Field(None, gt=0)
    leakage_auc_limit: float | None = Field(0.65, gt=0.5, le=1.0)
    """Fail when the block-bootstrap interval of a fold-demeaned AUC lies wholly outside
    [1 - limit, limit]; ``None`` turns the guard off."""
    round_trip_cost_pct: float = Field(0.2, ge=0.0)
    always_up_confidence: float = Field(0.65, gt=0.5, lt=1.0)
    """The always-up baseline's fixed p_up / (p_up + p_down)."""

    @model_validator(mode="after")
    def _thresholds_in_range(self) -> EvaluationOptions:
        if not all(0.5 <= t < 1.0 for t in self.thresholds):
            raise ValueError(f"thresholds must lie in [0.5, 1), got {self.thresholds}")
        return self


class ThresholdMetrics(_Frozen):
    threshold: float
    calls: int
    """Rows with confidence >= threshold."""
    coverage: float
    """calls / rows."""
    precision: float | None
    """Share of calls whose called barrier was touched first (an untouched row is a miss)."""
    precision_touched: float | None
    """The same among calls where a barrier was touched."""


class ReliabilityBin(_Frozen):
    lower: float
    upper: float
    rows: int
    mean_predicted: float
    observed: float


class GroupMetrics(_Frozen):
    """Metrics of one model on one group of rows, with the climatology's on the same rows beside them."""

    rows: int
    touched_rows: int
    effective_outcomes: int | None = None
    """Label windows among the rows that share no candle
    (:func:`bse_predict.evaluation.effective_sample.non_overlapping_windows`)."""
    effective_touched: int | None = None
    """The same among the touched rows: the effective sample of the up-vs-down AUC."""
    log_loss: float
    log_loss_climatology: float
    brier: float
    brier_climatology: float
    brier_skill: float
    """1 - brier / brier_climatology."""
    auc_up_vs_down: float | None
    """ROC AUC of p_up / (p_up + p_down) for UP against DOWN on touched rows; baseline 0.5."""
    up_share_touched: float | None
    accuracy: float
    accuracy_base_rate: float
    """Share of the group's most frequent class."""
    ece: float
    """Expected calibration error, class-wise (mean over the three classes), equal-width bins."""
    ece_climatology: float
    thresholds: tuple[ThresholdMetrics, ...]
    mean_probabilities: tuple[float, float, float]
    label_shares: tuple[float, float, float]


class Timings(_Frozen):
    prepare_seconds: float = 0.0
    fit_seconds: float = 0.0
    calibrate_seconds: float = 0.0
    predict_seconds: float = 0.0

    @property
    def total_seconds(self) -> float:
        return self.prepare_seconds + self.fit_seconds + self.calibrate_seconds + self.predict_seconds


class Interval(_Frozen):
    estimate: float
    lower: float
    upper: float


class AucIntervals(_Frozen):
    """Up-vs-down AUC of one model three ways, and per fold, each with its block-bootstrap interval
    (:mod:`bse_predict.evaluation.robust_auc`); ``None`` where a group lacks up or down outcomes."""

    pooled: Interval | None
    within_fold_mean: Interval | None
    fold_demeaned: Interval | None
    """Pooled over folds after each fold's mean score is subtracted: what the leakage guard reads."""
    by_fold: tuple[Interval | None, ...]
    blocks: int
    block_days: int


class ModelEvaluation(_Frozen):
    name: str
    kind: Literal["family", "baseline"]
    description: str
    pooled: GroupMetrics
    pooled_uncalibrated: GroupMetrics | None = None
    """A family's test predictions before the calibrator (same fitted model)."""
    auc_within_fold_mean: float | None = None
    """Mean of the per-fold AUCs: free of the between-fold part of the pooled AUC (a model
    whose level shifts with each fold's base rates gains pooled AUC without ranking rows)."""
    auc: AucIntervals | None = None
    auc_by_symbol: dict[str, AucIntervals] = {}
    """The same AUCs on each symbol's rows alone, with intervals over the blocks that symbol occupies."""
    by_fold: tuple[GroupMetrics | None, ...]
    by_symbol: dict[str, GroupMetrics]
    by_symbol_fold: dict[str, tuple[GroupMetrics | None, ...]]
    reliability: dict[str, tuple[ReliabilityBin, ...]]
    """Pooled reliability bins per class name."""
    feature_importance: dict[str, float] = {}
    """Mean over folds, where the family provides it."""
    timings: Timings
    fold_fit_seconds: tuple[float, ...] = ()


class PairedComparison(_Frozen):
    """``model`` against ``reference`` on the same rows; a negative difference means the model is better."""

    model: str
    reference: str
    metric: Literal["log_loss", "brier"]
    rows: int
    effective_outcomes: int | None = None
    """Non-overlapping label windows among the rows (see :class:`GroupMetrics`)."""
    blocks: int
    block_days: int
    mean_difference: Interval
    """mean(loss_model - loss_reference) per row."""
    relative_improvement: Interval
    """1 - loss_model / loss_reference (0.05 = 5% lower loss)."""


class FoldBoundary(_Frozen):
    index: int
    test_start_ms: int
    test_end_ms: int
    train_rows: int
    fit_rows: int
    calibration_rows: int
    test_rows: int
    first_test_ms: int | None
    last_test_ms: int | None
    newest_train_ms: int | None
    calibration_start_ms: int | None


class TargetEvaluation(_Frozen):
    target: str
    label_shares: tuple[float, float, float]
    """Class shares over all test rows."""
    break_even_hit_rate: float
    """0.5 + cost / (2 X): the touched hit rate a ±X bracket needs to beat the round-trip cost."""
    folds: tuple[FoldBoundary, ...]
    models: dict[str, ModelEvaluation]
    reference: str | None
    comparisons: tuple[PairedComparison, ...]
    verdicts: tuple[str, ...]


class DataSpan(_Frozen):
    symbol: str
    source: str
    start_ms: int
    end_ms: int
    rows: int


class LeakageFinding(_Frozen):
    """One model whose fold-demeaned AUC interval lies beyond the limit on one target."""

    model: str
    target: str
    auc: Interval
    """The fold-demeaned AUC and its interval."""
    folds: tuple[int, ...]
    """The folds whose own AUC interval lies beyond the limit; else the fold farthest from 0.5."""


class LeakageCheck(_Frozen):
    auc_limit: float | None
    passed: bool
    failures: tuple[str, ...] = ()
    """One line per finding, naming the model, the target and the folds."""
    statistic: str | None = None
    """What the guard reads: the interval of the fold-demeaned AUC."""
    findings: tuple[LeakageFinding, ...] = ()


class EvaluationReport(_Frozen):
    schema_version: Literal["1"] = SCHEMA_VERSION
    created_at: datetime
    options: EvaluationOptions
    market: dict[str, Any]
    family_params: dict[str, dict[str, dict[str, Any]]]
    """family -> target -> constructor keyword arguments used."""
    data: tuple[DataSpan, ...]
    targets: dict[str, TargetEvaluation]
    leakage: LeakageCheck
    library_versions: dict[str, str]
    total_seconds: float
    plots: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
