"""Paired block bootstrap of per-row loss differences between two models on the same rows.

Rows are grouped into blocks of ``block_days`` consecutive UTC days, pooled
over symbols: barrier labels overlap for up to the horizon (72 h) and
symbols move together, so rows are not independent, and a row bootstrap
would give intervals far too narrow. Blocks of at least the horizon keep
most of that dependence inside a block. Each replicate draws the blocks with
replacement (as multinomial weights, so a replicate is two matrix products)
and recomputes both statistics from the block sums.
"""

from __future__ import annotations

import numpy as np

from bse_predict.evaluation.schema import Interval

__all__ = ["day_blocks", "paired_bootstrap", "comparison_verdict", "claim_verdict"]

_MS_PER_DAY = 86_400_000


def day_blocks(open_time_ms: np.ndarray, block_days: int) -> np.ndarray:
    """Block id (0, 1, ... in time order, only occupied blocks) of every row."""
    if block_days < 1:
        raise ValueError(f"block_days must be >= 1, got {block_days}")
    days = np.asarray(open_time_ms, dtype=np.int64) // _MS_PER_DAY
    return np.unique((days - days.min()) // block_days, return_inverse=True)[1] if len(days) else days


def paired_bootstrap(model_loss: np.ndarray, reference_loss: np.ndarray, blocks: np.ndarray, samples: int,
                     confidence_level: float, seed: int) -> tuple[Interval, Interval]:
    """(mean of model - reference per row, relative improvement 1 - model / reference), each
    with its percentile interval at ``confidence_level``."""
    if not (len(model_loss) == len(reference_loss) == len(blocks)) or len(blocks) == 0:
        raise ValueError("paired_bootstrap needs equally long, non-empty loss and block arrays")
    n_blocks = int(blocks.max()) + 1
    model_sums = np.bincount(blocks, weights=model_loss, minlength=n_blocks)
    reference_sums = np.bincount(blocks, weights=reference_loss, minlength=n_blocks)
    counts = np.bincount(blocks, minlength=n_blocks).astype(float)
    weights = np.random.default_rng(seed).multinomial(n_blocks, np.full(n_blocks, 1.0 / n_blocks), size=samples)
    model_total, reference_total, rows = weights @ model_sums, weights @ reference_sums, weights @ counts
    differences = (model_total - reference_total) / rows
    improvements = 1.0 - model_total / reference_total
    alpha = (1.0 - confidence_level) / 2.0

    def interval(estimate: float, replicates: np.ndarray) -> Interval:
        lower, upper = np.quantile(replicates, [alpha, 1.0 - alpha])
        return Interval(estimate=estimate, lower=float(lower), upper=float(upper))

    estimate_difference = float(np.mean(model_loss - reference_loss))
    estimate_improvement = float(1.0 - model_loss.sum() / reference_loss.sum())
    return interval(estimate_difference, differences), interval(estimate_improvement, improvements)


NEGLIGIBLE = 1e-4
"""A relative improvement whose whole interval lies within this of 0 (0.01% of the reference's log loss) is
negligible, however consistent its sign: an ensemble refitted without a member it gave almost no weight
differs from itself by 1e-8 with an interval that excludes 0. The smallest significant difference between
two models on the whole futures history so far, a member of the served ensemble, is 0.36%."""


def comparison_verdict(improvement: Interval) -> str:
    """Better, worse, negligible (the whole interval within :data:`NEGLIGIBLE` of 0) or no significant
    difference, from the interval of the relative improvement."""
    if -NEGLIGIBLE <= improvement.lower and improvement.upper <= NEGLIGIBLE:
        return "negligible"
    if improvement.lower > 0:
        return "better"
    if improvement.upper < 0:
        return "worse"
    return "no significant difference"


def claim_verdict(improvement: Interval, low: float = 0.05, high: float = 0.10) -> str:
    """Test the claim "improves on the reference by low to high" against the interval."""
    band = f"{low:.0%}–{high:.0%}"
    ci = f"{improvement.estimate:+.2%} [{improvement.lower:+.2%}, {improvement.upper:+.2%}]"
    if improvement.lower >= low:
        return f"supported: the improvement is at least {low:.0%} ({ci})"
    if improvement.upper < low:
        return f"rejected: the improvement is below {low:.0%} ({ci}), short of the claimed {band}"
    return f"inconclusive: the interval {ci} straddles {low:.0%}"
