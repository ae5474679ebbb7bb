"""The always-valid champion/challenger test (bse_predict/monitoring/sequential.py).

Synthetic paired losses: a clearly better challenger is promoted, a clearly
worse one rolled back (or dropped from shadow), and two equal models almost
never trigger: over many simulated long runs, checked after *every* pair, the
share of runs with any verdict stays below the level.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from bse_predict.monitoring.sequential import (
    BETS,
    Evidence,
    add_differences,
    clipped_log_loss,
    decision_command,
    e_values,
    normalised_differences,
    verdict,
)

ALPHA = 0.05
CLIP = 5.0


def _three_class_run(rng: np.random.Generator, n: int, skill_champion: float, skill_challenger: float) -> np.ndarray:
    """Outcomes from known class probabilities; each model mixes the truth with climatology by its skill."""
    truth = rng.dirichlet([2.0, 2.0, 2.0], size=n)
    outcome = np.array([rng.choice(3, p=p) for p in truth])
    climatology = np.full(3, 1 / 3)
    p_champion = skill_champion * truth + (1 - skill_champion) * climatology
    p_challenger = skill_challenger * truth + (1 - skill_challenger) * climatology
    rows = np.arange(n)
    return normalised_differences(p_champion[rows, outcome], p_challenger[rows, outcome], CLIP)


def _first_verdict(x: np.ndarray, batch: int = 24) -> tuple[str | None, int]:
    """Peek after every batch, as the worker does; the verdict and the pairs it took."""
    evidence = Evidence()
    for start in range(0, len(x), batch):
        evidence = add_differences(evidence, x[start:start + batch])
        found = verdict(evidence, ALPHA)
        if found is not None:
            return found, evidence.pairs
    return None, evidence.pairs


def test_clipped_log_loss_and_differences_are_bounded() -> None:
    p = np.array([1.0, 0.5, math.exp(-CLIP), 1e-12, 0.0])
    assert clipped_log_loss(p, CLIP) == pytest.approx([0.0, math.log(2), CLIP, CLIP, CLIP])
    x = normalised_differences(np.array([0.0, 1.0, 0.5]), np.array([1.0, 0.0, 0.5]), CLIP)
    assert x.tolist() == [1.0, -1.0, 0.0]


def test_evidence_is_the_product_formula_and_order_free() -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, 500)
    whole = add_differences(Evidence(), x)
    pieces = Evidence()
    for chunk in np.array_split(rng.permutation(x), 7):
        pieces = add_differences(pieces, chunk)
    assert pieces.pairs == whole.pairs == 500
    assert np.allclose(pieces.log_wealth_better, whole.log_wealth_better)
    better, worse = e_values(whole)
    assert better == pytest.approx(np.mean([np.prod(1 + lam * x) for lam in BETS]))
    assert worse == pytest.approx(np.mean([np.prod(1 - lam * x) for lam in BETS]))
    with pytest.raises(ValueError):
        add_differences(Evidence(), [1.5])


def test_a_clearly_better_challenger_is_promoted() -> None:
    x = _three_class_run(np.random.default_rng(2), 6000, skill_champion=0.0, skill_challenger=0.8)
    found, pairs = _first_verdict(x)
    print(f"clearly better challenger: verdict after {pairs} pairs")
    assert found == "challenger_better" and pairs < 6000
    assert decision_command(found, "v2", challenger_is_live=False) == ("promote", {"version": "v2"})
    assert decision_command(found, "v2", challenger_is_live=False, shadow_previous=True) == (
        "promote", {"version": "v2", "shadow_previous": True})
    # promoted and watched beside the old version, it held up: the watch ends
    assert decision_command(found, "v2", challenger_is_live=True) == ("shadow", {"version": None})


def test_a_clearly_worse_challenger_is_rolled_back_or_dropped() -> None:
    x = _three_class_run(np.random.default_rng(3), 6000, skill_champion=0.8, skill_challenger=0.0)
    found, pairs = _first_verdict(x)
    print(f"clearly worse challenger: verdict after {pairs} pairs")
    assert found == "challenger_worse" and pairs < 6000
    assert decision_command(found, "v2", challenger_is_live=True) == ("rollback", {})
    assert decision_command(found, "v2", challenger_is_live=False) == ("shadow", {"version": None})


def _ever_above(x: np.ndarray, sign: float, threshold: float) -> np.ndarray:
    """Per run (row of x): did the mixture wealth of one side ever reach the threshold?"""
    bets = np.asarray(BETS)[:, None, None]
    log_wealth = np.cumsum(np.log1p(sign * bets * x[None]), axis=2)
    top = log_wealth.max(axis=0)
    mixture = top + np.log(np.mean(np.exp(log_wealth - top), axis=0))
    return (mixture >= threshold).any(axis=1)


def test_two_equal_models_rarely_trigger_over_long_runs_checked_at_every_pair() -> None:
    """Both are the same forecaster with independent noise; the test is peeked at after every pair."""
    rng = np.random.default_rng(4)
    runs, steps, per_chunk = 1000, 3000, 100
    threshold = math.log(2 / ALPHA)
    triggered = 0
    for _ in range(runs // per_chunk):
        truth = rng.dirichlet([2.0, 2.0, 2.0], size=(per_chunk, steps))
        outcome = (rng.random((per_chunk, steps, 1)) > np.cumsum(truth, axis=2)).sum(axis=2).clip(0, 2)
        p_true = np.take_along_axis(truth, outcome[..., None], axis=2)[..., 0]
        a, b = ((p_true + rng.normal(0, 0.08, p_true.shape)).clip(0.01, 1) for _ in range(2))
        x = normalised_differences(a, b, CLIP)
        triggered += int((_ever_above(x, 1.0, threshold) | _ever_above(x, -1.0, threshold)).sum())
    rate = triggered / runs
    print(f"false positive rate over {runs} runs of {steps} pairs, checked every pair: {rate:.4f} (alpha {ALPHA})")
    assert rate <= ALPHA


def test_a_test_with_no_verdict_ends_inconclusive_at_max_pairs_and_the_shadow_goes() -> None:
    x = _three_class_run(np.random.default_rng(5), 4000, skill_champion=0.4, skill_challenger=0.4)
    evidence = add_differences(Evidence(), x)
    assert verdict(evidence, 0.05) is None, "equal models: no verdict"
    assert verdict(evidence, 0.05, max_pairs=4001) is None
    assert verdict(evidence, 0.05, max_pairs=4000) == "inconclusive"
    for challenger_is_live in (False, True):  # a challenger not shown better is dropped; a promotion not shown worse kept
        assert decision_command("inconclusive", "v2", challenger_is_live) == ("shadow", {"version": None})
