"""Live scores of settled predictions over rolling windows, as additive sums.

Every outcome adds a handful of numbers (:func:`score_fields`): its log loss,
Brier score, whether the arg-max class was right, which class happened, and
its place in the calibration bins. Sums of these are all that any score
needs, so they can be kept per time bucket in Redis (``HINCRBYFLOAT`` from
every worker, in any order) and a rolling window is the sum of its buckets
(:func:`window_scores`). :class:`RollingScores` is the same in memory, tested
step by step against the batch formulas.

Scores, for outcome ``y`` and probabilities ``p = (p_up, p_down, p_none)``:

- log loss ``-log max(p_y, 1e-15)``;
- Brier ``Σ_k (p_k - [y = k])²`` (the three-class Brier, 0 best, 2 worst);
- accuracy: ``argmax p == y`` (ties to the first class), beside the base rate,
  the share of the window's most frequent outcome (what "always say that" scores);
- calibration: per class ``k`` and bin of ``p_k`` (``bins`` equal-width bins on
  [0, 1]), the count, mean ``p_k`` and the share of outcomes that were ``k``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from pydantic import BaseModel, ConfigDict

from bse_predict.labels.first_touch import CLASS_NAMES

__all__ = [
    "LOG_LOSS_FLOOR",
    "CalibrationBin",
    "LiveScores",
    "score_fields",
    "add_fields",
    "window_scores",
    "bucket_of",
    "RollingScores",
]

LOG_LOSS_FLOOR = 1e-15


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
    class_shares: dict[str, float]
    calibration: tuple[CalibrationBin, ...]


def _bin_of(p: float, bins: int) -> int:
    return min(int(p * bins), bins - 1)


def score_fields(p: Sequence[float], outcome: str, bins: int) -> dict[str, float]:
    """The sums one outcome adds (``p`` = (p_up, p_down, p_none), ``outcome`` a class name)."""
    y = CLASS_NAMES.index(outcome)
    probabilities = [float(v) for v in p]  # plain floats: numpy on three numbers cost more than the sums
    fields = {
        "n": 1.0,
        "log_loss": -math.log(max(probabilities[y], LOG_LOSS_FLOOR)),
        "brier": sum((q - float(k == y)) ** 2 for k, q in enumerate(probabilities)),
        "correct": float(max(range(len(probabilities)), key=probabilities.__getitem__) == y),  # ties: the first
        f"y:{outcome}": 1.0,
    }
    for k, name in enumerate(CLASS_NAMES):
        b = _bin_of(probabilities[k], bins)
        fields[f"cal:{name}:{b}:n"] = 1.0
        fields[f"cal:{name}:{b}:p"] = probabilities[k]
        fields[f"cal:{name}:{b}:hit"] = float(k == y)
    return fields


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
    return LiveScores(count=round(n), log_loss=fields.get("log_loss", 0.0) / n, brier=fields.get("brier", 0.0) / n,
                      accuracy=fields.get("correct", 0.0) / n, base_rate=max(shares.values()),
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
