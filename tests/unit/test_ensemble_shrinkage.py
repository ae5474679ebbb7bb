"""Never worse than knowing nothing: the climatology member, weights that may be 0 and stay put
across resamples, and stacking regularised on inner folds or dropped for the weighted mixture.
Generated outcomes with known class shares, so that each answer can be checked by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bse_predict.ensembles.combiners import CombinerSpec, StackingCombiner, combine, log_loss, with_climatology
from bse_predict.ensembles.inner_folds import inner_folds
from bse_predict.ensembles.stacking_choice import choose_stacking
from bse_predict.ensembles.weight_fit import fit_weights, mixture_objective
from bse_predict.families.base import BasePredictor
from bse_predict.families.ensemble import EnsemblePredictor
from bse_predict.scoring.probabilities import climatology_shares

SHARES = np.array([0.4, 0.35, 0.25])
ROWS = 3000
HOUR_MS = 3_600_000


def _outcomes(seed: int, rows: int = ROWS) -> np.ndarray:
    return np.random.default_rng(seed).choice(3, size=rows, p=SHARES)


def _informative(y: np.ndarray, strength: float) -> np.ndarray:
    """Rows that put ``strength`` more on the outcome than the shares do (renormalised): real skill."""
    p = np.tile(SHARES, (len(y), 1))
    p[np.arange(len(y)), y] += strength
    return p / p.sum(axis=1, keepdims=True)


def test_the_climatology_member_answers_the_training_shares_on_every_row() -> None:
    probs = np.random.default_rng(0).dirichlet(np.ones(3), (2, 5))
    rows = with_climatology(probs, np.array([0.5, 0.3, 0.2]))
    assert rows.shape == (3, 5, 3) and np.array_equal(rows[:2], probs)
    assert np.array_equal(rows[2], np.tile([0.5, 0.3, 0.2], (5, 1)))
    assert with_climatology(probs, None) is probs
    np.testing.assert_allclose(climatology_shares(np.array([0, 0, 1])), [2.5 / 4.5, 1.5 / 4.5, 0.5 / 4.5])


def test_members_that_know_nothing_get_zero_weight_and_climatology_nearly_all() -> None:
    """A constant answer with the wrong shares and a Dirichlet-noise answer: neither beats the
    shares themselves, so the mixture is (almost) climatology alone."""
    y = _outcomes(1)
    wrong_shares = np.tile([0.1, 0.1, 0.8], (ROWS, 1))
    noise = np.random.default_rng(2).dirichlet(np.full(3, 2.0), ROWS)
    probs = with_climatology(np.stack([wrong_shares, noise]), climatology_shares(y))
    w = fit_weights(probs, y, penalty=0.01, toward=2)
    assert w.sum() == pytest.approx(1.0) and (w >= 0).all()
    assert w[0] < 1e-3 and w[1] < 0.05 and w[2] > 0.95
    p, _ = combine(CombinerSpec("weighted", w, climatology=climatology_shares(y)), probs[:2])
    assert log_loss(p, y) <= log_loss(np.tile(climatology_shares(y), (ROWS, 1)), y) + 1e-4


def test_a_noisy_member_gets_exactly_zero_beside_an_informative_one() -> None:
    y = _outcomes(3)
    noise = np.random.default_rng(4).dirichlet(np.ones(3), ROWS)
    probs = with_climatology(np.stack([_informative(y, 0.3), noise]), climatology_shares(y))
    w = fit_weights(probs, y, penalty=0.01, toward=2)
    assert w[1] == 0.0 and w[0] > 0.5


def test_the_penalty_keeps_the_weights_of_two_near_copies_stable_across_resamples() -> None:
    """Two members that say nearly the same thing: without the penalty their split swings from one
    block resample to the next; with it each keeps about half."""
    y = _outcomes(5)
    rng = np.random.default_rng(6)
    a = _informative(y, 0.1)
    b = np.clip(a + rng.normal(0.0, 0.01, a.shape), 0.01, None)
    probs = with_climatology(np.stack([a, b / b.sum(axis=1, keepdims=True)]), climatology_shares(y))
    resamples = [np.concatenate([np.arange(s, s + 100) for s in rng.integers(0, ROWS - 100, ROWS // 100)])
                 for _ in range(20)]

    def spread(penalty: float) -> float:
        return float(np.std([fit_weights(probs[:, rows], y[rows], penalty, toward=2)[0] for rows in resamples]))

    assert spread(0.01) < 0.05 and spread(0.0) > 0.2


def test_the_objective_gradient_is_the_derivative_of_the_penalised_log_loss() -> None:
    rng = np.random.default_rng(7)
    picked = rng.uniform(0.05, 0.95, (3, 200))
    w, prior = np.array([0.2, 0.5, 0.3]), np.array([0.0, 0.0, 1.0])
    _, gradient = mixture_objective(w, picked, 0.3, prior)
    step = 1e-6
    numeric = [(mixture_objective(w + step * e, picked, 0.3, prior)[0]
                - mixture_objective(w - step * e, picked, 0.3, prior)[0]) / (2 * step) for e in np.eye(3)]
    np.testing.assert_allclose(gradient, numeric, rtol=1e-5)


def test_inner_folds_cut_time_so_symbols_of_one_hour_share_a_block_and_keep_a_purge() -> None:
    """Rows come per symbol, oldest first: blocks of rows would test one symbol on the others' same
    hours. Blocks of time hold every symbol's rows of an hour, and train only on hours a purge away."""
    hours = np.arange(100) * HOUR_MS
    times = np.concatenate([hours, hours, hours[20:]])  # three symbols, the third starting later
    folds = inner_folds(times, 3, 5 * HOUR_MS)
    assert len(folds) == 3
    assert np.array_equal(np.sort(np.concatenate([test for _, test in folds])), np.arange(len(times)))
    for train, test in folds:
        tested = set(times[test].tolist())
        assert all(np.isin(times, list(tested)) == np.isin(np.arange(len(times)), test))  # whole hours
        assert np.min(np.abs(times[train][:, None] - times[test][None, :])) > 5 * HOUR_MS
    assert [len(test) for _, test in folds] == pytest.approx([len(times) / 3] * 3, abs=3)


def test_stacking_that_over_fits_is_dropped_and_stacking_that_fixes_a_member_is_kept() -> None:
    y = _outcomes(8, 600)
    noise = np.random.default_rng(9).dirichlet(np.ones(3), (6, 600))
    hours = np.arange(600) * HOUR_MS
    over_fit = choose_stacking(noise, with_climatology(noise, climatology_shares(y)), y, hours, (100.0,), 3,
                               10 * HOUR_MS, 0.01, 0, 6)
    assert not over_fit.kept and over_fit.stacking_log_loss > over_fit.mixture_log_loss
    # a member that names the wrong class in a fixed way: only a re-mapping of its classes helps
    shifted = _informative(y, 0.6)[:, [1, 2, 0]][None]
    fixes = choose_stacking(shifted, with_climatology(shifted, climatology_shares(y)), y, hours, (0.01, 1.0), 3,
                            10 * HOUR_MS, 0.01, 0, 1)
    assert fixes.kept and fixes.c == 1.0 and fixes.stacking_log_loss < 0.5 * fixes.mixture_log_loss


def test_a_dropped_stacking_serves_the_weighted_mixture() -> None:
    y = _outcomes(10, 200)
    probs = np.random.default_rng(11).dirichlet(np.ones(3), (2, 200))
    model = EnsemblePredictor(members=("random_forest", "xgboost"))
    model.weights_, model.power_, model.by_regime_ = np.array([0.2, 0.0, 0.8]), 0.0, None
    model.climatology_ = climatology_shares(y)
    model.stacking_ = None
    assert model.combiner_spec("stacking").strategy == "weighted"
    np.testing.assert_array_equal(model.combine(probs, "stacking")[0], model.combine(probs, "weighted")[0])
    model.stacking_ = StackingCombiner.fit(probs, y, 1.0, 0)
    assert model.combiner_spec("stacking").strategy == "stacking"


def test_a_stacking_fit_stopped_before_converging_says_so_in_the_log_not_on_the_screen(
        caplog: pytest.LogCaptureFixture) -> None:
    """scikit-learn's ConvergenceWarning is library noise here: the inner folds judge the fit by its out-of-fold
    log loss. It goes to the debug log instead."""
    import logging
    import warnings

    y = _outcomes(12, 600)
    probs = np.stack([_informative(y, 0.3), np.random.default_rng(13).dirichlet(np.ones(3), 600)])
    with warnings.catch_warnings(), caplog.at_level(logging.DEBUG, logger="bse_predict.ensembles.combiners"):
        warnings.simplefilter("error")  # any warning fails the test
        StackingCombiner.fit(probs, y, 1.0, 0, max_iter=2)
    assert any("stopped at 2 iterations before converging" in r.getMessage() for r in caplog.records)


class _Reads(BasePredictor):
    """Not a registered family: it answers ``_informative`` of the outcome written in column 0."""

    family = "reads_column_0"

    def train(self, X: np.ndarray, y: np.ndarray, validation_data: object = None) -> dict[str, float]:
        return {}

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return _informative(X[:, 0].astype(np.int64), 0.3)

    def export_onnx(self, path: Path) -> None:
        raise NotImplementedError("a test member is never exported")


class _Noise(_Reads):
    """Dirichlet noise seeded by column 1: no skill."""

    family = "noise"

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return np.random.default_rng(int(X[0, 1])).dirichlet(np.ones(3), len(X))


class _TwoMembers(EnsemblePredictor):
    def _member_models(self) -> list[BasePredictor]:
        return [_Reads(), _Noise()]


def _rows(seed: int) -> tuple[np.ndarray, np.ndarray]:
    y = _outcomes(seed)
    return np.column_stack([y, np.full(ROWS, seed)]).astype(np.float64), y


@pytest.mark.parametrize("ablation", [True, False])
def test_member_ablation_refits_the_weighted_mixture_without_each_member_on_the_same_rows(ablation: bool) -> None:
    """Leaving out the member with skill costs log loss; leaving out the noise, which gets no weight
    anyway, costs nothing. Without ``member_ablation`` no such strategy exists."""
    model = _TwoMembers(members=("reads", "noise"), member_ablation=ablation, purge_rows=24)
    x_fit, y_fit = _rows(5)
    x_validation, y_validation = _rows(6)
    model.train(x_fit, y_fit, validation_data=(x_validation, y_validation),
                validation_open_time_ms=np.arange(ROWS, dtype=np.int64) * HOUR_MS)
    ablations = {"weighted_without_reads", "weighted_without_noise"}
    assert (ablations <= set(model.variants())) is ablation
    if not ablation:
        with pytest.raises(ValueError, match="not fitted"):
            model.predict_strategy(x_validation, "weighted_without_reads")
        return
    x_test, y_test = _rows(7)
    served = log_loss(model.predict_strategy(x_test, "weighted"), y_test)
    without_skill = model.weights_without_["reads"]
    assert without_skill[0] == 0.0 and without_skill.sum() == pytest.approx(1.0)
    assert model.weights_without_["noise"][1] == 0.0
    assert log_loss(model.predict_strategy(x_test, "weighted_without_reads"), y_test) > served + 0.05
    assert log_loss(model.predict_strategy(x_test, "weighted_without_noise"), y_test) == pytest.approx(served, abs=2e-3)
    record = model.combiner_record("weighted_without_reads", "ensemble")
    assert record is not None and record.strategy == "weighted" and record.weights[0] == 0.0
