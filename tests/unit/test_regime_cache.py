"""One HMM fit per version: families that fit the same regime model on the same hours share one fit,
and what they answer is what they answered when each fitted its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bse_predict.candles.files import CandleSeries
from bse_predict.families import get_model
from bse_predict.families.regime_cache import shared_regime_fits
from bse_predict.families.regime_model import RegimeModel
from bse_predict.features.inputs import InputRows
from bse_predict.labels.first_touch import UNKNOWN
from bse_predict.training.dataset import SymbolDataset, build_dataset

HMM = {"n_states": 3, "n_iter": 15, "seed": 5}
HYBRID = {"base_params": {"n_estimators": 8, "max_depth": 4, "min_samples_leaf": 40, "seed": 3, "n_jobs": 1}, **HMM}
"""One thread: a forest's threads add its trees' probabilities in either order (equal to the last bit only)."""


@pytest.fixture(scope="module")
def dataset(futures_series: dict[str, CandleSeries]) -> SymbolDataset:
    return build_dataset(futures_series["ETHUSDT"].tail(2500), (1, 2), 72)


@pytest.fixture(autouse=True)
def one_blas_thread() -> Iterator[None]:
    """As the trainer fits: with two BLAS threads the same product can differ in its last bit from one call to the next."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


@pytest.fixture
def fits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the real fits (one entry per call of :meth:`RegimeModel.fit`)."""
    calls: list[int] = []
    real_fit = RegimeModel.fit

    def counted(self: RegimeModel, stretches: list[np.ndarray]) -> RegimeModel:
        calls.append(sum(len(s) for s in stretches))
        return real_fit(self, stretches)

    monkeypatch.setattr(RegimeModel, "fit", counted)
    return calls


def _train_both(dataset: SymbolDataset, rows: slice) -> tuple[np.ndarray, np.ndarray]:
    """The HMM family at 1% and the RandomForest hybrid at 2%, on the same hours; their answers on every row."""
    known = dataset.labels["1%"] != UNKNOWN
    sequences, features = dataset.sequences(known)[rows], dataset.features[known][rows]
    hmm = get_model("hmm_regime", **HMM)
    hmm.train(sequences, dataset.labels["1%"][known][rows].astype(np.int64))
    hybrid = get_model("random_forest_regimes", **HYBRID)
    both = InputRows({"features": features, "sequence": sequences})
    hybrid.train(both, dataset.labels["2%"][known][rows].astype(np.int64))
    return hmm.predict_proba(sequences), hybrid.predict_proba(both)


def test_families_on_the_same_hours_share_one_fit_and_answer_as_before(
        dataset: SymbolDataset, fits: list[int], tmp_path: Path) -> None:
    alone = _train_both(dataset, slice(0, 1800))
    assert len(fits) == 2  # outside the shared context each family fits its own
    with shared_regime_fits(tmp_path / "regimes"):
        shared = _train_both(dataset, slice(0, 1800))
        again = _train_both(dataset, slice(0, 1800))
    assert len(fits) == 3  # one fit for the four trainings inside
    for before, now, later in zip(alone, shared, again, strict=True):
        np.testing.assert_array_equal(before, now)
        np.testing.assert_array_equal(before, later)


def test_other_hours_or_other_hyperparameters_fit_anew(dataset: SymbolDataset, fits: list[int],
                                                        tmp_path: Path) -> None:
    known = dataset.labels["1%"] != UNKNOWN
    sequences = dataset.sequences(known)
    labels = dataset.labels["1%"][known].astype(np.int64)
    with shared_regime_fits(tmp_path / "regimes"):
        get_model("hmm_regime", **HMM).train(sequences[:1800], labels[:1800])
        get_model("hmm_regime", **HMM).train(sequences[:1700], labels[:1700])
        get_model("hmm_regime", **{**HMM, "seed": 6}).train(sequences[:1800], labels[:1800])
        get_model("hmm_regime", **HMM).train(sequences[:1800], labels[:1800])
    assert len(fits) == 3
