"""An always-valid sequential test of a challenger against the champion on paired log losses.

Each observation is one prediction (one candle, one target) that both models
answered: ``d = loss(champion) - loss(challenger)`` with each log loss clipped
to ``[0, B]`` (``B = clip_nats``, i.e. probabilities floored at ``exp(-B)``), so
``x = d / B`` lies in ``[-1, 1]``; ``x > 0`` means the challenger did better.

The test is a betting e-process (Waudby-Smith & Ramdas, "Estimating means of
bounded random variables by betting", 2023). For a bet ``λ`` in ``[0, 1)`` the
wealth ``W_λ = Π (1 + λ x_i)`` stays positive (``x >= -1``) and is a
non-negative supermartingale whenever every ``x_i`` has conditional mean ``<= 0``
given the past ("the challenger is not better"). The average of ``W_λ`` over a
fixed grid of bets is one too, so by Ville's inequality
``P(sup_n mean_λ W_λ >= 2/α) <= α/2`` under that null, *at any stopping time*:
checking after every batch, every hour or whenever one likes keeps the level.
The mirror wealth ``Π (1 - λ x_i)`` tests "the challenger is not worse". Each
side runs at ``α/2``, so the chance of any wrong verdict between two equal
models is at most ``α`` over an unbounded run.

State is the sum of ``log(1 ± λ x_i)`` per bet: additive, so workers add their
observations in any order (Redis ``HINCRBYFLOAT``) and the totals are the same.

Caveat (also in docs/live-metrics.md): the guarantee needs the conditional-mean
condition in the order observations are added. The three targets of a candle,
and candles whose 72 h horizons overlap, are correlated; the supermartingale
argument still holds for any dependence as long as each new difference has
mean ``<= 0`` given everything before it, which "two equal models" satisfies
when their answers are exchangeable, but a systematic, time-varying edge can
make the decision reflect the recent period only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from bse_predict.scoring.probabilities import outcome_log_loss

__all__ = [
    "BETS",
    "Verdict",
    "Evidence",
    "clipped_log_loss",
    "normalised_differences",
    "add_differences",
    "e_values",
    "threshold",
    "verdict",
    "decision_command",
]

BETS: tuple[float, ...] = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.7)
"""The grid of bets λ: small ones win slowly on a small edge, large ones fast on a large edge."""

Verdict = Literal["challenger_better", "challenger_worse", "inconclusive"]


class Evidence(BaseModel):
    """Sums of log wealth per bet on both sides, and the number of pairs."""

    model_config = ConfigDict(frozen=True)

    pairs: int = 0
    sum_x: float = 0.0
    log_wealth_better: tuple[float, ...] = (0.0,) * len(BETS)
    log_wealth_worse: tuple[float, ...] = (0.0,) * len(BETS)

    @property
    def mean_difference(self) -> float:
        """Mean of ``x`` (the normalised loss difference; > 0: challenger better)."""
        return self.sum_x / self.pairs if self.pairs else 0.0


def clipped_log_loss(p_of_outcome: np.ndarray, clip_nats: float) -> np.ndarray:
    """:func:`~bse_predict.scoring.probabilities.outcome_log_loss` of the outcome that happened, with
    p raised to ``exp(-clip_nats)`` first and the loss clipped to ``[0, clip_nats]``."""
    p = np.asarray(p_of_outcome, dtype=np.float64)
    return np.minimum(outcome_log_loss(np.maximum(p, math.exp(-clip_nats))), clip_nats)


def normalised_differences(p_champion: np.ndarray, p_challenger: np.ndarray, clip_nats: float) -> np.ndarray:
    """``(loss(champion) - loss(challenger)) / clip_nats`` in [-1, 1] from each model's p of the outcome."""
    return (clipped_log_loss(p_champion, clip_nats) - clipped_log_loss(p_challenger, clip_nats)) / clip_nats


def add_differences(evidence: Evidence, x: Sequence[float] | np.ndarray) -> Evidence:
    """The evidence after more normalised differences (any order gives the same sums)."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return evidence
    if np.any(np.abs(x) > 1.0 + 1e-12) or not np.all(np.isfinite(x)):
        raise ValueError("normalised differences must lie in [-1, 1]")
    bets = np.asarray(BETS)[:, None]
    better = np.log1p(bets * x).sum(axis=1)
    worse = np.log1p(-bets * x).sum(axis=1)
    return Evidence(
        pairs=evidence.pairs + int(x.size),
        sum_x=evidence.sum_x + float(x.sum()),
        log_wealth_better=tuple(float(a + b) for a, b in zip(evidence.log_wealth_better, better, strict=True)),
        log_wealth_worse=tuple(float(a + b) for a, b in zip(evidence.log_wealth_worse, worse, strict=True)),
    )


def _mean_exp(logs: Sequence[float]) -> float:
    top = max(logs)
    return math.exp(top) * sum(math.exp(v - top) for v in logs) / len(logs) if top < 700 else math.inf


def e_values(evidence: Evidence) -> tuple[float, float]:
    """(e-value for "challenger better", e-value for "challenger worse"): the mixture wealths."""
    return _mean_exp(evidence.log_wealth_better), _mean_exp(evidence.log_wealth_worse)


def threshold(alpha: float) -> float:
    """The e-value at which a side wins: ``2 / alpha`` (each side runs at ``alpha / 2``)."""
    return 2.0 / alpha


def verdict(evidence: Evidence, alpha: float, max_pairs: int | None = None) -> Verdict | None:
    """A verdict once one side's wealth reaches ``2 / alpha``; "inconclusive" when neither did within
    ``max_pairs`` pairs (stopping for futility takes no side, so it costs the test nothing); else None
    (keep watching)."""
    better, worse = e_values(evidence)
    bar = threshold(alpha)
    if better >= bar:
        return "challenger_better"
    if worse >= bar:
        return "challenger_worse"
    if max_pairs is not None and evidence.pairs >= max_pairs:
        return "inconclusive"
    return None


def decision_command(found: Verdict, challenger: str, challenger_is_live: bool,
                     shadow_previous: bool = False) -> tuple[str, dict[str, object]]:
    """The control command a verdict calls for; the challenger is always the *newer* version.

    - better, challenger in shadow: ``promote`` it (``shadow_previous``: the version it
      replaces stays as the shadow, so the test goes on and watches it live);
    - better, challenger already live (the older one is shadowed to watch it): the watch
      is over, ``shadow`` off;
    - worse, challenger live (a live regression): ``rollback`` to the previous live version;
    - worse, challenger in shadow: ``shadow`` off (the candidate is dropped; live stays);
    - inconclusive: ``shadow`` off either way (a challenger not shown better is dropped; a promoted
      version not shown worse stays live): an undecided test must not hold the shadow, and the
      retrains that wait for it, for ever.
    """
    if found == "challenger_better" and not challenger_is_live:
        return "promote", {"version": challenger, **({"shadow_previous": True} if shadow_previous else {})}
    if found == "challenger_worse" and challenger_is_live:
        return "rollback", {}
    return "shadow", {"version": None}
