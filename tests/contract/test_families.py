"""One check suite over every registered family (the scikit-learn way).

A family that cannot pass a check names it, with the reason, in its
``skipped_checks``; the suite then asserts that the reason is there instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from bse_predict.candles.files import CandleSeries
from bse_predict.training.dataset import build_dataset
from bse_predict.families import BasePredictor, get_model, list_models, register
from bse_predict.explain.errors import NotExplainable
from bse_predict.families.base import ONNX_OUTPUT, UnknownFamily
from bse_predict.serving.onnx_runner import make_session

FAMILIES = list_models()
ROUNDING = 1e-12  # multi-threaded tree sums may add in another order: equal to the last bits, not bitwise
# float32 families (the LSTM) differ by ~1e-8 between batch sizes (kernels block the batch differently); a leak
# moves probabilities by orders of magnitude more (test_the_look_ahead_check_catches_a_leak).
LOOK_AHEAD_ATOL = 1e-6
ADDS_UP = 1e-6  # XGBoost's contributions and probabilities are float32 sums; a forest's add up to ~1e-16


def _input_key(family: str) -> tuple[str, ...]:
    """Families that keep the base ``prepare_data`` share rows by input kind; one that
    overrides it (the regime hybrid reads two kinds) gets its own."""
    model = get_model(family)
    return (model.input_kind,) if type(model).prepare_data is BasePredictor.prepare_data else (family,)


@pytest.fixture(scope="module")
def inputs(futures_series: dict[str, CandleSeries]) -> dict[tuple[str, ...], dict[str, Any]]:
    """The same rows as each family's inputs (features, sequence, or both)."""
    dataset = build_dataset(futures_series["BTCUSDT"].tail(3200), (2,), 72)
    by_key: dict[tuple[str, ...], dict[str, Any]] = {}
    for family in FAMILIES:
        if _input_key(family) not in by_key:
            X, y = get_model(family).prepare_data(dataset, "2%")
            by_key[_input_key(family)] = {"x_train": X[:2200], "y_train": y[:2200], "x_test": X[2300:],
                                          "y_test": y[2300:]}
    return by_key


@pytest.fixture
def data(family: str, inputs: dict[tuple[str, ...], dict[str, Any]]) -> dict[str, Any]:
    return inputs[_input_key(family)]


def _fitted(family: str, data: dict[str, np.ndarray], **overrides: Any) -> BasePredictor:
    model = get_model(family, **{**get_model(family).fast_params, **overrides})
    model.train(data["x_train"], data["y_train"])
    return model


def _skip_reason(family: str, check: str) -> str | None:
    return get_model(family).skipped_checks.get(check)


@pytest.fixture(scope="module")
def fitted(inputs: dict[tuple[str, ...], dict[str, Any]]) -> dict[str, BasePredictor]:
    return {family: _fitted(family, inputs[_input_key(family)]) for family in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_probabilities_are_valid(family: str, fitted: dict[str, BasePredictor], data: dict[str, np.ndarray]) -> None:
    p = fitted[family].predict_proba(data["x_test"])
    assert p.shape == (len(data["x_test"]), 3)
    assert np.all(p >= 0) and np.allclose(p.sum(axis=1), 1.0)
    assert np.array_equal(fitted[family].predict(data["x_test"]), np.argmax(p, axis=1))


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_same_output_and_clone_behaves_like_new(family: str, fitted: dict[str, BasePredictor],
                                                          data: dict[str, np.ndarray]) -> None:
    clone = fitted[family].clone()
    assert clone.get_hyperparameters() == fitted[family].get_hyperparameters()
    assert not any(name.endswith("_") and not name.startswith("_") for name in vars(clone))
    clone.train(data["x_train"], data["y_train"])
    np.testing.assert_allclose(clone.predict_proba(data["x_test"]), fitted[family].predict_proba(data["x_test"]),
                               rtol=0, atol=ROUNDING)


@pytest.mark.parametrize("family", FAMILIES)
def test_onnx_equals_native(family: str, fitted: dict[str, BasePredictor], data: dict[str, np.ndarray],
                            tmp_path: Path) -> None:
    model = fitted[family]
    model.export_onnx(tmp_path / "model.onnx")
    session = make_session(tmp_path / "model.onnx", ["CPUExecutionProvider"])  # as served: self-contained graphs only
    assert {i.name for i in session.get_inputs()} == set(model.input_kinds)
    (onnx_p,) = session.run([ONNX_OUTPUT], model.onnx_feed(data["x_test"]))
    assert onnx_p.shape == (len(data["x_test"]), 3)
    assert float(np.max(np.abs(onnx_p - model.predict_proba(data["x_test"])))) <= 1e-5


@pytest.mark.parametrize("family", FAMILIES)
def test_no_look_ahead(family: str, fitted: dict[str, BasePredictor], data: dict[str, np.ndarray]) -> None:
    """Predictions for rows <= t do not change when rows after t are appended."""
    if reason := _skip_reason(family, "no_look_ahead"):
        assert reason.strip()
        return
    assert _look_ahead_change(fitted[family].predict_proba, data["x_test"]) <= LOOK_AHEAD_ATOL


def _look_ahead_change(predict_proba: Any, rows: np.ndarray) -> float:
    """The largest change of the predictions for rows <= t when the rows after t are appended."""
    full = predict_proba(rows)
    return max(float(np.max(np.abs(predict_proba(rows[:t]) - full[:t]))) for t in (1, 50, len(rows) // 2))


def test_the_look_ahead_check_catches_a_leak(inputs: dict[tuple[str, ...], dict[str, Any]]) -> None:
    """A model that standardises each column over the rows it is given (the whole batch, future included)
    changes its past predictions by far more than the tolerance."""
    rows = inputs[("features",)]["x_test"]

    def leaky(x: np.ndarray) -> np.ndarray:
        z = (x[:, 0] - x[:, 0].mean()) / (x[:, 0].std() + 1.0)
        up = 0.5 / (1.0 + np.exp(-z))
        return np.column_stack([up, 0.5 - up, np.full(len(x), 0.5)])

    assert _look_ahead_change(leaky, rows) > 100 * LOOK_AHEAD_ATOL


@pytest.mark.parametrize("family", FAMILIES)
def test_contributions_add_up_to_the_output(family: str, fitted: dict[str, BasePredictor],
                                            data: dict[str, np.ndarray]) -> None:
    """Each column's contributions, the bias and the unexplained part add up to ``predict_proba``, row by
    row and class by class (bse_predict/explain); a family without contributions says why it skips."""
    model = fitted[family]
    if reason := _skip_reason(family, "additivity"):
        assert reason.strip()
        with pytest.raises(NotExplainable):
            model.contributions(data["x_test"])
        return
    c = model.contributions(data["x_test"])
    np.testing.assert_allclose(c.output(), model.predict_proba(data["x_test"]), rtol=0, atol=ADDS_UP)
    assert c.values.shape == (len(data["x_test"]), len(c.names), 3) and c.inputs.shape == c.values.shape[:2]
    np.testing.assert_allclose(c.values.sum(axis=2), 0.0, atol=1e-12)  # probabilities keep summing to 1


@pytest.mark.parametrize("family", FAMILIES)
def test_save_and_load_round_trip(family: str, fitted: dict[str, BasePredictor], data: dict[str, np.ndarray],
                                  tmp_path: Path) -> None:
    fitted[family].save(tmp_path / "model.joblib")
    loaded = type(fitted[family]).load(tmp_path / "model.joblib")
    np.testing.assert_allclose(loaded.predict_proba(data["x_test"]), fitted[family].predict_proba(data["x_test"]),
                               rtol=0, atol=ROUNDING)


@pytest.mark.parametrize("family", FAMILIES)
def test_interface_answers(family: str, fitted: dict[str, BasePredictor], data: dict[str, np.ndarray]) -> None:
    model = fitted[family]
    metrics = model.validate(data["x_test"], data["y_test"])
    assert {"log_loss", "log_loss_climatology", "brier_skill", "accuracy", "accuracy_base_rate"} <= set(metrics)
    importance = model.get_feature_importance()
    assert all(np.isfinite(v) for v in importance.values())
    from configs.settings import SignalThresholds

    signals = model.generate_signals(data["x_test"][:5], SignalThresholds())
    assert len(signals) == 5 and all(s.signal in {"STRONG_BUY", "LONG", "NEUTRAL", "SHORT", "STRONG_SELL"} for s in signals)


def test_the_registry_enforces_the_interface() -> None:
    class Incomplete(BasePredictor):
        family = "incomplete"

    with pytest.raises(TypeError, match="abstract"):
        register(Incomplete)

    class Duplicate(BasePredictor):
        family = FAMILIES[0]
        fast_params: ClassVar[dict[str, Any]] = {}

        def train(self, X, y, validation_data=None):  # type: ignore[no-untyped-def]
            return {}

        def predict_proba(self, X):  # type: ignore[no-untyped-def]
            return np.full((len(X), 3), 1 / 3)

        def export_onnx(self, path):  # type: ignore[no-untyped-def]
            return None

    with pytest.raises(ValueError, match="already registered"):
        register(Duplicate)
    with pytest.raises(UnknownFamily, match="known: "):
        get_model("no-such-family")
