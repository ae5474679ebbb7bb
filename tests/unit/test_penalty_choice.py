"""The mixture weights' penalty chosen on purged inner folds: weak where the members earn their
weight, the strongest candidate where the rows are too few to judge, a fixed one kept as given.
Generated outcomes with known class shares and members of known skill."""

from __future__ import annotations

import numpy as np

from bse_predict.ensembles.combiners import with_climatology
from bse_predict.ensembles.penalty_choice import choose_penalty
from bse_predict.ensembles.weight_fit import fit_weights
from bse_predict.families.ensemble import EnsemblePredictor
from bse_predict.scoring.probabilities import climatology_shares

SHARES = np.array([0.4, 0.35, 0.25])
HOUR_MS = 3_600_000
PENALTIES = (0.001, 0.01, 0.1, 1.0)


def _members_and_outcomes(rows: int, strength: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One member with ``strength`` more on the outcome than the shares (real skill), one that is noise,
    and the climatology member last."""
    rng = np.random.default_rng(seed)
    y = rng.choice(3, size=rows, p=SHARES)
    skilled = np.tile(SHARES, (rows, 1))
    skilled[np.arange(rows), y] += strength
    skilled /= skilled.sum(axis=1, keepdims=True)
    noise = rng.dirichlet(np.full(3, 4.0), rows)
    return with_climatology(np.stack([skilled, noise]), climatology_shares(y)), y


def test_members_with_skill_on_many_rows_get_a_weak_penalty_and_most_of_the_weight() -> None:
    """The fixed 0.1 of before leaves much of the weight on climatology although the skilled member
    beats it on every fold; the inner folds see that and choose a weaker pull."""
    mixture, y = _members_and_outcomes(6000, 0.08, seed=1)
    choice = choose_penalty(mixture, y, np.arange(len(y)) * HOUR_MS, PENALTIES, 3, 72 * HOUR_MS, toward=2)
    assert set(choice.inner_log_loss) == set(PENALTIES)
    assert choice.inner_log_loss[choice.penalty] == min(choice.inner_log_loss.values())  # ties: the stronger
    assert choice.penalty <= 0.01
    assert choice.inner_log_loss[choice.penalty] < choice.inner_log_loss[0.1] < choice.inner_log_loss[1.0]
    chosen, fixed = (fit_weights(mixture, y, p, toward=2) for p in (choice.penalty, 0.1))
    assert chosen[0] > 0.6 and chosen[0] > fixed[0] + 0.2 and fixed[2] > 0.3


def test_too_few_rows_to_cut_inner_folds_take_the_strongest_candidate() -> None:
    mixture, y = _members_and_outcomes(200, 0.3, seed=2)
    model = EnsemblePredictor(members=("random_forest", "xgboost"), weight_penalties=PENALTIES, purge_rows=72)
    model.climatology_ = climatology_shares(y)
    assert model._choose_penalty(mixture, y, np.arange(len(y)) * HOUR_MS, toward=2) == 1.0  # 200 < 2 folds x 3 x 73


def test_a_fixed_penalty_is_used_as_given_and_a_free_one_is_chosen() -> None:
    mixture, y = _members_and_outcomes(3000, 0.08, seed=3)
    times = np.arange(len(y)) * HOUR_MS
    fixed = EnsemblePredictor(members=("random_forest", "xgboost"), weight_penalty=0.3, purge_rows=24)
    free = EnsemblePredictor(members=("random_forest", "xgboost"), weight_penalties=PENALTIES, purge_rows=24)
    for model in (fixed, free):
        model.climatology_ = climatology_shares(y)
    assert fixed._choose_penalty(mixture, y, times, toward=2) == 0.3
    expected = choose_penalty(mixture, y, times, PENALTIES, 3, 24 * HOUR_MS, toward=2).penalty
    assert free._choose_penalty(mixture, y, times, toward=2) == expected < 1.0
