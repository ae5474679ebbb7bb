"""The LSTM family: one ONNX LSTM node equal to Keras, early stopping that keeps the best
checkpoint, only the last ``sequence_length`` hours read, and a purge that never trains."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from bse_predict.candles.files import CandleSeries
from bse_predict.training.dataset import build_dataset
from bse_predict.families import BasePredictor, get_model
from bse_predict.families.base import ONNX_OUTPUT
from bse_predict.families.base import validation_split
from bse_predict.families.lstm import LSTMPredictor
from bse_predict.features.sequences import SEQUENCE_LENGTH

pytestmark = pytest.mark.slow  # trains Keras LSTMs: seconds

FAST = {"sequence_length": 24, "units": 8, "epochs": 2, "batch_size": 256, "patience": 1}
TRAIN_ROWS = 2400


@pytest.fixture(scope="module")
def eth(futures_series: dict[str, CandleSeries]) -> tuple[np.ndarray, np.ndarray]:
    dataset = build_dataset(futures_series["ETHUSDT"].tail(3000), (2,), 72)
    return LSTMPredictor().prepare_data(dataset, "2%")


@pytest.fixture(scope="module")
def fitted(eth: tuple[np.ndarray, np.ndarray]) -> LSTMPredictor:
    X, y = eth
    model = LSTMPredictor(**FAST)
    model.train(X[:TRAIN_ROWS], y[:TRAIN_ROWS])
    return model


def _onnx(model: LSTMPredictor, path: Path) -> ort.InferenceSession:
    model.export_onnx(path)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_the_registry_finds_the_family_and_refuses_bad_shapes() -> None:
    model = get_model("lstm", units=4)
    assert isinstance(model, LSTMPredictor) and model.input_kind == "sequence"
    with pytest.raises(ValueError, match=r"\[n, 168, 4\]"):
        model.train(np.zeros((10, 24, 4), np.float32), np.zeros(10, np.int64))
    with pytest.raises(ValueError, match="sequence_length"):
        LSTMPredictor(sequence_length=SEQUENCE_LENGTH + 1).train(np.zeros((10, 168, 4)), np.zeros(10, np.int64))


def test_real_sequences_have_the_served_shape(eth: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = eth
    assert X.dtype == np.float32 and X.shape[1:] == (SEQUENCE_LENGTH, 4) and len(X) == len(y) > TRAIN_ROWS + 200
    assert np.isfinite(X).all() and set(np.unique(y)) <= {0, 1, 2}


def test_onnx_holds_one_lstm_node_and_equals_keras(fitted: LSTMPredictor, eth: tuple[np.ndarray, np.ndarray],
                                                  tmp_path: Path) -> None:
    held_out = eth[0][TRAIN_ROWS + 72:]
    session = _onnx(fitted, tmp_path / "lstm.onnx")
    graph = onnx.load(str(tmp_path / "lstm.onnx")).graph
    lstm_nodes = [node for node in graph.node if node.op_type == "LSTM"]
    assert len(lstm_nodes) == 1 and not {node.op_type for node in graph.node} & {"Loop", "Scan"}
    assert all(a.i == 0 for a in lstm_nodes[0].attribute if a.name == "layout")  # sequence-major
    assert [i.name for i in graph.input] == ["sequence"] and [o.name for o in graph.output] == [ONNX_OUTPUT]
    dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims[1:] == [SEQUENCE_LENGTH, 4]
    (onnx_p,) = session.run([ONNX_OUTPUT], {"sequence": held_out})
    keras_p = fitted.model_.predict(held_out, verbose=0)
    assert onnx_p.shape == (len(held_out), 3)
    assert float(np.max(np.abs(onnx_p - keras_p))) <= 1e-5
    assert float(np.max(np.abs(onnx_p - fitted.predict_proba(held_out)))) <= 1e-5


def test_only_the_last_sequence_length_hours_matter(fitted: LSTMPredictor, eth: tuple[np.ndarray, np.ndarray],
                                                   tmp_path: Path) -> None:
    rows = eth[0][-200:]
    older = SEQUENCE_LENGTH - fitted.sequence_length
    changed = rows.copy()
    changed[:, :older, :] = np.random.default_rng(3).normal(scale=10.0, size=changed[:, :older, :].shape)
    np.testing.assert_array_equal(fitted.predict_proba(changed), fitted.predict_proba(rows))
    session = _onnx(fitted, tmp_path / "lstm.onnx")
    np.testing.assert_array_equal(session.run([ONNX_OUTPUT], {"sequence": changed})[0],
                                  session.run([ONNX_OUTPUT], {"sequence": rows})[0])
    newest = rows.copy()
    newest[:, older, :] += 1.0  # the oldest hour the model does read
    assert not np.array_equal(fitted.predict_proba(newest), fitted.predict_proba(rows))


def test_early_stopping_stops_on_noise_labels_and_keeps_the_best_checkpoint(tmp_path: Path) -> None:
    import keras

    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, SEQUENCE_LENGTH, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=600)
    model = LSTMPredictor(sequence_length=12, units=8, epochs=40, patience=2, learning_rate=0.03, batch_size=64,
                          validation_fraction=0.25, purge_rows=10, lr_schedule="constant",
                          checkpoint_dir=str(tmp_path))
    metrics = model.train(X, y)
    val_loss = model.history_["val_loss"]
    assert model.epochs_run_ == len(val_loss) < model.epochs
    assert model.best_epoch_ == int(np.argmin(val_loss)) + 1 == model.epochs_run_ - model.patience
    assert metrics["rows"] == 150 and metrics["best_epoch"] == model.best_epoch_
    # the kept weights are the checkpoint's, and they score the best epoch's loss, not the last one's
    checkpoint = keras.models.clone_model(model.model_)
    checkpoint.load_weights(str(tmp_path / "best.weights.h5"))
    for kept, saved in zip(model.model_.get_weights(), checkpoint.get_weights(), strict=True):
        np.testing.assert_array_equal(kept, saved)
    p = model.predict_proba(X[450:])
    kept_loss = float(-np.mean(np.log(p[np.arange(150), y[450:]])))
    assert kept_loss == pytest.approx(min(val_loss), rel=1e-5)
    assert kept_loss < val_loss[-1]


def test_the_purge_before_the_validation_tail_never_trains(fitted: LSTMPredictor,
                                                           eth: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = eth[0][:TRAIN_ROWS], eth[1][:TRAIN_ROWS]
    fit, held = validation_split(TRAIN_ROWS, fitted.validation_fraction, fitted.purge_rows)
    assert (fit, held) == (slice(0, 1968), slice(2040, 2400)) and fitted.fit_rows_ == 1968
    purge = slice(fit.stop, held.start)
    assert purge.stop - purge.start == fitted.purge_rows == 72
    rows = eth[0][TRAIN_ROWS + 72:]

    garbage_x, garbage_y = X.copy(), y.copy()
    garbage_x[purge] = np.nan  # one NaN trained on would make every weight NaN
    garbage_y[purge] = (garbage_y[purge] + 1) % 3
    purged = LSTMPredictor(**FAST)
    purged.train(garbage_x, garbage_y)
    np.testing.assert_array_equal(purged.predict_proba(rows), fitted.predict_proba(rows))

    last_trained_y = y.copy()
    last_trained_y[fit.stop - 1] = (last_trained_y[fit.stop - 1] + 1) % 3  # the row just before the purge
    control = LSTMPredictor(**FAST)
    control.train(X, last_trained_y)
    assert not np.array_equal(control.predict_proba(rows), fitted.predict_proba(rows))


def test_validation_split_refuses_too_few_rows() -> None:
    assert validation_split(100, 0.0, 72) == (slice(0, 100), None)
    with pytest.raises(ValueError, match="too few"):
        validation_split(100, 0.15, 72)


def test_pickled_model_loads_through_the_base_class(fitted: LSTMPredictor, eth: tuple[np.ndarray, np.ndarray],
                                                    tmp_path: Path) -> None:
    """The native runner loads with ``BasePredictor.load``: the Keras model travels inside."""
    rows = eth[0][-100:]
    fitted.save(tmp_path / "lstm.joblib")
    loaded = BasePredictor.load(tmp_path / "lstm.joblib")
    assert isinstance(loaded, LSTMPredictor) and loaded.get_hyperparameters() == fitted.get_hyperparameters()
    np.testing.assert_array_equal(loaded.predict_proba(rows), fitted.predict_proba(rows))
