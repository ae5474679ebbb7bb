"""Live scores of settled predictions over rolling windows, as additive sums.

Every outcome adds a handful of numbers (:func:`score_fields`): its log loss,
Brier score, whether the arg-max class was right, which class happened, and
its place in the calibration bins. Sums of these are all that any score
needs, so they can be kept per time bucket in Redis (``HINCRBYFLOAT`` from
every worker, in any order) and a rolling window is the sum of its buckets
(:func:`window_scores`). :class:`RollingScores` is the same in memory, tested
step by step against the batch formulas.

Scores, for outcome ``y`` and probabilities ``p = (p_up, p_down, p_none)``, with the
formulas of :mod:`bse_predict.scoring.probabilities`:

- log loss ``-log max(p_y, PROBABILITY_FLOOR)``;
- Brier ``Σ_k (p_k - [y = k])²`` (the three-class Brier, 0 best, 2 worst);
- accuracy: ``argmax p == y`` (ties to the first class), beside the base rate,
  the share of the window's most frequent outcome (what "always say that" scores);
- climatology log loss: the log loss of forecasting the window's own outcome
  shares ``s`` for every row, ``Σ_k s_k · -log max(s_k, floor)``: the best constant
  forecast in hindsight, the bar a model's log loss must beat to have skill;
- calibration: per class ``k`` and bin of ``p_k`` (``bins`` equal-width bins on
  [0, 1]), the count, mean ``p_k`` and the share of outcomes that were ``k``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from bse_predict.labels.first_touch import CLASS_NAMES
from bse_predict.scoring.probabilities import bin_index, outcome_log_loss, row_brier

__all__ = [
    "CalibrationBin",
    "LiveScores",
    "score_fields",
    "batch_score_fields",
    "score_field_names",
    "grouped_score_sums",
    "grouped_score_fields",
    "add_fields",
    "window_scores",
    "bucket_of",
    "RollingScores",
]

class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class CalibrationBin(_Frozen):
    cls: str
    bin: int
    count: int
    mean_p: float
    hit_rate: float


class LiveScores(_Frozen):
    count: int
    log_loss: float
    brier: float
    accuracy: float
    base_rate: float
    climatology_log_loss: float
    class_shares: dict[str, float]
    calibration: tuple[CalibrationBin, ...]


def score_fields(p: Sequence[float], outcome: str, bins: int) -> dict[str, float]:
    """The sums one outcome adds (``p`` = (p_up, p_down, p_none), ``outcome`` a class name)."""
    return batch_score_fields(np.asarray([p], dtype=np.float64), np.array([CLASS_NAMES.index(outcome)]), bins)[0]


def batch_score_fields(probabilities: np.ndarray, labels: np.ndarray, bins: int) -> list[dict[str, float]]:
    """:func:`score_fields` of every row of ``probabilities`` [n, 3] with its class index in ``labels``,
    the formulas run once over the rows."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    log_losses = outcome_log_loss(p[np.arange(len(p)), y]).tolist()
    briers = row_brier(p, y).tolist()
    correct = (np.argmax(p, axis=1) == y).tolist()  # ties: the first
    places = bin_index(p, bins).tolist()
    rows = []
    for k, (row, label) in enumerate(zip(p.tolist(), y.tolist(), strict=True)):
        fields = {"n": 1.0, "log_loss": log_losses[k], "brier": briers[k], "correct": float(correct[k]),
                  f"y:{CLASS_NAMES[label]}": 1.0}
        for c, (name, b, q) in enumerate(zip(CLASS_NAMES, places[k], row, strict=True)):
            fields[f"cal:{name}:{b}:n"] = 1.0
            fields[f"cal:{name}:{b}:p"] = q
            fields[f"cal:{name}:{b}:hit"] = float(c == label)
        rows.append(fields)
    return rows


def score_field_names(bins: int) -> tuple[str, ...]:
    """The name of each column of :func:`grouped_score_sums`: the fields of :func:`score_fields`."""
    calibration = tuple(f"cal:{name}:{b}:{part}" for name in CLASS_NAMES for b in range(bins) for part in ("n", "p", "hit"))
    return ("n", "log_loss", "brier", "correct", *(f"y:{name}" for name in CLASS_NAMES), *calibration)


def grouped_score_sums(probabilities: np.ndarray, labels: np.ndarray, bins: int, groups: np.ndarray,
                       n_groups: int) -> np.ndarray:
    """float[n_groups, len(score_field_names(bins))]: per group ``g``, the sums of :func:`batch_score_fields`
    over the rows whose ``groups`` entry is ``g`` (each sum adds its rows in row order from 0.0, as
    ``add_fields`` does), one column per field name, 0 where no row has the field."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    g = np.asarray(groups, dtype=np.intp)
    classes = len(CLASS_NAMES)
    sums = np.zeros((n_groups, 4 + classes + classes * bins * 3))
    for column, values in enumerate((np.ones(len(p)), outcome_log_loss(p[np.arange(len(p)), y]), row_brier(p, y),
                                     (np.argmax(p, axis=1) == y).astype(np.float64))):
        np.add.at(sums[:, column], g, values)
    np.add.at(sums[:, 4:4 + classes], (g, y), 1.0)
    places = bin_index(p, bins)
    cal = sums[:, 4 + classes:].reshape(n_groups, classes, bins, 3)  # a view: n, p, hit per class and bin
    for c in range(classes):
        np.add.at(cal[..., 0], (g, c, places[:, c]), 1.0)
        np.add.at(cal[..., 1], (g, c, places[:, c]), p[:, c])
        np.add.at(cal[..., 2], (g, c, places[:, c]), (y == c).astype(np.float64))
    return sums


def grouped_score_fields(probabilities: np.ndarray, labels: np.ndarray, bins: int, groups: np.ndarray,
                         n_groups: int) -> list[dict[str, float]]:
    """Per group ``g < n_groups``: ``add_fields`` of :func:`batch_score_fields` over the rows whose
    ``groups`` entry is ``g``, with the same fields and the same sums, without a dict per row."""
    names = score_field_names(bins)
    classes = len(CLASS_NAMES)
    result = []
    for row in grouped_score_sums(probabilities, labels, bins, groups, n_groups).tolist():
        fields = dict(zip(names[:4], row[:4], strict=True))
        fields.update((name, value) for name, value in zip(names[4:4 + classes], row[4:4 + classes], strict=True)
                      if value > 0)
        for start in range(4 + classes, len(names), 3):
            if row[start] > 0:
                fields.update(zip(names[start:start + 3], row[start:start + 3], strict=True))
        result.append(fields)
    return result


def add_fields(parts: Iterable[Mapping[str, float]]) -> dict[str, float]:
    total: dict[str, float] = defaultdict(float)
    for part in parts:
        for key, value in part.items():
            total[key] += float(value)
    return dict(total)


def window_scores(fields: Mapping[str, float], bins: int) -> LiveScores | None:
    """Scores from summed fields; None when the window holds no outcome."""
    n = fields.get("n", 0.0)
    if n <= 0:
        return None
    shares = {name: fields.get(f"y:{name}", 0.0) / n for name in CLASS_NAMES}
    calibration = []
    for name in CLASS_NAMES:
        for b in range(bins):
            count = fields.get(f"cal:{name}:{b}:n", 0.0)
            if count > 0:
                calibration.append(CalibrationBin(cls=name, bin=b, count=round(count),
                                                  mean_p=fields.get(f"cal:{name}:{b}:p", 0.0) / count,
                                                  hit_rate=fields.get(f"cal:{name}:{b}:hit", 0.0) / count))
    share_values = np.array(list(shares.values()))
    return LiveScores(count=round(n), log_loss=fields.get("log_loss", 0.0) / n, brier=fields.get("brier", 0.0) / n,
                      accuracy=fields.get("correct", 0.0) / n, base_rate=max(shares.values()),
                      climatology_log_loss=float(np.sum(share_values * outcome_log_loss(share_values))),
                      class_shares=shares, calibration=tuple(calibration))


def bucket_of(time_ms: int, bucket_ms: int) -> int:
    """The index of the time bucket holding ``time_ms``."""
    return time_ms // bucket_ms


class RollingScores:
    """Scores over the buckets ``(b_now - span, b_now]``: add outcomes, read the window.

    ``span_buckets`` buckets of ``bucket_ms`` each; a bucket leaves the window
    once the newest time seen is ``span_buckets`` buckets past it.
    """

    def __init__(self, span_buckets: int, bucket_ms: int, bins: int) -> None:
        self.span_buckets = span_buckets
        self.bucket_ms = bucket_ms
        self.bins = bins
        self._buckets: dict[int, dict[str, float]] = {}
        self._newest: int | None = None

    def update(self, p: Sequence[float], outcome: str, time_ms: int) -> None:
        bucket = bucket_of(time_ms, self.bucket_ms)
        self._newest = bucket if self._newest is None else max(self._newest, bucket)
        if bucket <= self._newest - self.span_buckets:
            return  # already outside the window
        self._buckets[bucket] = add_fields([self._buckets.get(bucket, {}), score_fields(p, outcome, self.bins)])
        for old in [b for b in self._buckets if b <= self._newest - self.span_buckets]:
            del self._buckets[old]

    def scores(self) -> LiveScores | None:
        return window_scores(add_fields(self._buckets.values()), self.bins)
