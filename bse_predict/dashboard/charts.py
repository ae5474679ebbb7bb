"""The track record's two small charts as SVG coordinates, drawn by the template (no JavaScript):

- the reliability diagram of one series: per class and probability bin, the mean predicted probability
  (x) against the observed share of that class (y), a dot whose area grows with the bin's count, over
  the diagonal of perfect calibration;
- an equity curve: cumulative net return (y) against exit time (x), with the zero line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from bse_predict.labels.first_touch import CLASS_NAMES
from bse_predict.monitoring.live_scores import CalibrationBin

__all__ = ["PAD", "ReliabilityDot", "reliability_dots", "EquityChart", "equity_chart"]

PAD = 24  # room for the axis labels, in SVG units
_MAX_RADIUS = 7.0
_MAX_POINTS = 400


class ReliabilityDot(NamedTuple):
    cls: str
    x: float
    y: float
    r: float
    count: int
    mean_p: float
    hit_rate: float
    lower: float  # the bin's edges
    upper: float


def reliability_dots(calibration: Sequence[CalibrationBin], bins: int, size: float) -> tuple[ReliabilityDot, ...]:
    """The dots of a ``size`` × ``size`` reliability diagram (plot area inside ``PAD``), by class then bin."""
    largest = max((b.count for b in calibration), default=1)
    span = size - 2 * PAD
    return tuple(ReliabilityDot(b.cls, PAD + b.mean_p * span, size - PAD - b.hit_rate * span,
                                max(1.5, _MAX_RADIUS * math.sqrt(b.count / largest)), b.count, b.mean_p, b.hit_rate,
                                b.bin / bins, (b.bin + 1) / bins)
                 for b in sorted(calibration, key=lambda b: (CLASS_NAMES.index(b.cls), b.bin)))


class EquityChart(NamedTuple):
    points: str  # the polyline's "x,y x,y …"
    zero_y: float
    low: float  # the y axis' range, percent
    high: float
    start_ms: int
    end_ms: int


def equity_chart(curve: Sequence[tuple[int, float]], width: float, height: float) -> EquityChart | None:
    """The curve (exit time ms, cumulative %), starting from 0 at the first exit, scaled into ``width`` × ``height``
    (inside ``PAD``): one point per exit time (the cumulative after all its trades), at most ``_MAX_POINTS``,
    evenly picked, the last always; None with no trade."""
    if not curve:
        return None
    curve = list({time_ms: value for time_ms, value in curve}.items())  # the last value of each exit time
    step = max(1, math.ceil(len(curve) / _MAX_POINTS))
    picked = list(curve[::step]) + ([curve[-1]] if (len(curve) - 1) % step else [])
    start, end = picked[0][0], picked[-1][0]
    values = [0.0] + [v for _, v in picked]
    low, high = min(values), max(values)
    if high - low < 1e-9:
        low, high = low - 1.0, high + 1.0
    x_span, y_span = width - 2 * PAD, height - 2 * PAD

    def x(time_ms: int) -> float:
        return PAD + (0.0 if end == start else (time_ms - start) / (end - start) * x_span)

    def y(value: float) -> float:
        return height - PAD - (value - low) / (high - low) * y_span

    coordinates = [(x(start), y(0.0))] + [(x(t), y(v)) for t, v in picked]
    return EquityChart(" ".join(f"{a:.1f},{b:.1f}" for a, b in coordinates), y(0.0), low, high, start, end)
