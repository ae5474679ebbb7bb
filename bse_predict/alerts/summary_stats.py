"""Live scores of resolved predictions for the daily summary: hit rates beside base rates,
Brier scores beside the climatology's, a reliability table, best and worst.

Definitions (docs/alerts.md repeats them for readers of the summary):

- the *call* of a prediction is its called side (up unless p_down > p_up, as
  :func:`bse_predict.scoring.probabilities.called_side` says); it *hits* when
  the outcome equals it, so an outcome of none is a miss;
- the *base rate* is the hit rate of always calling the side that was more
  frequent in the same outcomes: hindsight's best constant call, the bar a
  model must clear to be worth anything;
- *edge* = hit rate - base rate;
- *Brier* is the three-class score mean(sum_k (p_k - y_k)^2) (0 is perfect),
  *base Brier* the score of forecasting the window's own class frequencies;
- the reliability table bins the called side's probability at
  :data:`RELIABILITY_EDGES` and puts the observed frequency of that side
  beside the mean forecast.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from bse_predict.alerts.rules import target_sort_key
from bse_predict.labels.first_touch import CLASS_NAMES, DOWN, UP
from bse_predict.scoring.probabilities import calibration_bins, called_side, row_brier

__all__ = ["ResolvedCall", "GroupStats", "ReliabilityBin", "Ranking", "SummaryStats", "group_stats", "summarize",
           "RELIABILITY_EDGES"]

RELIABILITY_EDGES = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 1.0)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ResolvedCall(_Frozen):
    """One prediction's answer for one target, with whether it had been alerted."""

    symbol: str
    target: str
    outcome: Literal["up", "down", "none"]
    p_up: float
    p_down: float
    p_none: float
    alerted: bool
    resolved_at: int

    @property
    def direction(self) -> Literal["up", "down"]:
        return "up" if called_side(np.array([self.p_up, self.p_down, self.p_none])) == UP else "down"

    @property
    def hit(self) -> bool:
        return self.outcome == self.direction

    @property
    def called_probability(self) -> float:
        return self.p_up if self.direction == "up" else self.p_down


class GroupStats(_Frozen):
    name: str
    n: int
    hit_rate: float
    base_rate: float
    brier: float
    brier_base: float
    alerts: int
    alert_hit_rate: float | None

    @property
    def edge(self) -> float:
        return self.hit_rate - self.base_rate


class ReliabilityBin(_Frozen):
    lower: float
    upper: float
    n: int
    mean_forecast: float
    observed: float


class SummaryStats(_Frozen):
    start_ms: int
    end_ms: int
    overall: GroupStats
    by_target: tuple[GroupStats, ...]
    by_symbol: tuple[GroupStats, ...]
    by_pair: tuple[GroupStats, ...]
    reliability: tuple[ReliabilityBin, ...]
    ranking: dict[str, Ranking]  # "symbol", "target", "pair"


class Ranking(_Frozen):
    """The groups with the largest and the smallest edge among those with enough outcomes."""

    best: GroupStats | None
    worst: GroupStats | None


def group_stats(name: str, calls: Sequence[ResolvedCall]) -> GroupStats:
    """Scores of one non-empty group of resolved calls."""
    if not calls:
        raise ValueError(f"group {name!r} has no resolved calls")
    n = len(calls)
    labels = np.array([CLASS_NAMES.index(c.outcome) for c in calls])
    frequency = np.bincount(labels, minlength=len(CLASS_NAMES)) / n
    forecasts = np.array([(c.p_up, c.p_down, c.p_none) for c in calls])
    alerted = [c for c in calls if c.alerted]
    return GroupStats(
        name=name,
        n=n,
        hit_rate=sum(c.hit for c in calls) / n,
        base_rate=float(max(frequency[UP], frequency[DOWN])),
        brier=float(np.mean(row_brier(forecasts, labels))),
        brier_base=float(np.mean(row_brier(np.tile(frequency, (n, 1)), labels))),
        alerts=len(alerted),
        alert_hit_rate=sum(c.hit for c in alerted) / len(alerted) if alerted else None,
    )


def _reliability(calls: Sequence[ResolvedCall]) -> tuple[ReliabilityBin, ...]:
    binned = calibration_bins(np.array([c.called_probability for c in calls]), np.array([c.hit for c in calls]),
                              RELIABILITY_EDGES)
    mean_p, hit_rate = binned.mean_p, binned.hit_rate
    return tuple(ReliabilityBin(lower=float(binned.lower[b]), upper=float(binned.upper[b]), n=int(binned.rows[b]),
                                mean_forecast=float(mean_p[b]), observed=float(hit_rate[b]))
                 for b in np.flatnonzero(binned.rows))


def _grouped(calls: Iterable[ResolvedCall], key: str) -> dict[str, list[ResolvedCall]]:
    groups: dict[str, list[ResolvedCall]] = defaultdict(list)
    for call in calls:
        name = {"target": call.target, "symbol": call.symbol, "pair": f"{call.symbol} {call.target}"}[key]
        groups[name].append(call)
    return groups


def summarize(calls: Sequence[ResolvedCall], start_ms: int, end_ms: int, min_samples: int) -> SummaryStats | None:
    """Scores of the calls resolved in [start_ms, end_ms); None when there are none.

    Best and worst symbol, target and symbol-and-target pair: the largest and
    the smallest edge among the groups with at least ``min_samples`` outcomes
    (no worst when only one group qualifies).
    """
    inside = [c for c in calls if start_ms <= c.resolved_at < end_ms]
    if not inside:
        return None
    by_target = _grouped(inside, "target")
    by_symbol = _grouped(inside, "symbol")
    targets = tuple(group_stats(t, by_target[t]) for t in sorted(by_target, key=target_sort_key))
    symbols = tuple(group_stats(s, by_symbol[s]) for s in sorted(by_symbol))
    pairs = tuple(group_stats(name, group) for name, group in sorted(_grouped(inside, "pair").items()))
    return SummaryStats(
        start_ms=start_ms,
        end_ms=end_ms,
        overall=group_stats("all", inside),
        by_target=targets,
        by_symbol=symbols,
        by_pair=pairs,
        reliability=_reliability(inside),
        ranking={"symbol": _rank(symbols, min_samples), "target": _rank(targets, min_samples),
                 "pair": _rank(pairs, min_samples)},
    )


def _rank(groups: Sequence[GroupStats], min_samples: int) -> Ranking:
    ranked = sorted((g for g in groups if g.n >= min_samples), key=lambda g: (g.edge, g.name))
    return Ranking(best=ranked[-1] if ranked else None, worst=ranked[0] if len(ranked) > 1 else None)
