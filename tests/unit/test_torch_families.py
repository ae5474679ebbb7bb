"""The PyTorch families (tcn, lstm_hybrid): only the hours they read matter, the hybrid's graph holds
one ONNX LSTM node over two inputs, early stopping keeps the best epoch, the purge never trains, and
fitting and exporting beside TensorFlow neither aborts nor prints library noise."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest

from bse_predict.candles.files import CandleSeries
from bse_predict.families import BasePredictor, get_model
from bse_predict.families.base import ONNX_OUTPUT, validation_split
from bse_predict.families.lstm_hybrid import LSTMHybridPredictor
from bse_predict.families.tcn import TCNPredictor
from bse_predict.features.inputs import InputRows
from bse_predict.features.sequences import SEQUENCE_LENGTH
from bse_predict.serving.onnx_runner import make_session
from bse_predict.training.dataset import build_dataset

pytestmark = pytest.mark.slow  # trains small networks: seconds

TRAIN_ROWS = 2400


@pytest.fixture(scope="module")
def eth(futures_series: dict[str, CandleSeries]) -> tuple[InputRows, np.ndarray]:
    dataset = build_dataset(futures_series["ETHUSDT"].tail(3000), (2,), 72)
    return LSTMHybridPredictor().prepare_data(dataset, "2%")


@pytest.fixture(scope="module")
def tcn(eth: tuple[InputRows, np.ndarray]) -> TCNPredictor:
    rows, y = eth
    model = TCNPredictor(**TCNPredictor.fast_params)
    model.train(rows.parts["sequence"][:TRAIN_ROWS], y[:TRAIN_ROWS])
    return model


@pytest.fixture(scope="module")
def hybrid(eth: tuple[InputRows, np.ndarray]) -> LSTMHybridPredictor:
    rows, y = eth
    model = LSTMHybridPredictor(**LSTMHybridPredictor.fast_params)
    model.train(rows[:TRAIN_ROWS], y[:TRAIN_ROWS])
    return model


def test_the_registry_finds_both_and_bad_settings_are_refused() -> None:
    assert isinstance(get_model("tcn"), TCNPredictor) and get_model("tcn").input_kinds == ("sequence",)
    assert get_model("lstm_hybrid").input_kinds == ("features", "sequence")
    noise = np.zeros((300, SEQUENCE_LENGTH, 4), np.float32), np.zeros(300, np.int64)
    with pytest.raises(ValueError, match=r"\[n, 168, 4\]"):
        TCNPredictor().train(np.zeros((300, 24, 4), np.float32), noise[1])
    with pytest.raises(ValueError, match="sequence_length"):
        TCNPredictor(sequence_length=SEQUENCE_LENGTH + 1).train(*noise)
    with pytest.raises(ValueError, match="device"):
        TCNPredictor(device="tpu").train(*noise)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="InputRows"):
        LSTMHybridPredictor().train(*noise)


def test_the_tcn_reads_only_the_hours_of_its_receptive_field(tcn: TCNPredictor, eth: tuple[InputRows, np.ndarray],
                                                              tmp_path: Path) -> None:
    """The newest hour's output sees 1 + (kernel_size - 1)(2^levels - 1) hours (22 with the fast
    parameters, inside the 48 it crops): older hours change nothing, the oldest one it sees does."""
    rows = eth[0].parts["sequence"][-200:]
    receptive = 1 + (tcn.kernel_size - 1) * (2 ** tcn.levels - 1)
    assert receptive == 22 < tcn.sequence_length
    oldest_seen = SEQUENCE_LENGTH - receptive
    changed = rows.copy()
    changed[:, :oldest_seen, :] = np.random.default_rng(3).normal(scale=10.0, size=changed[:, :oldest_seen, :].shape)
    np.testing.assert_array_equal(tcn.predict_proba(changed), tcn.predict_proba(rows))
    tcn.export_onnx(tmp_path / "tcn.onnx")
    session = make_session(tmp_path / "tcn.onnx", ["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run([ONNX_OUTPUT], {"sequence": changed})[0],
                               session.run([ONNX_OUTPUT], {"sequence": rows})[0], rtol=0, atol=1e-7)
    for hour in (oldest_seen, SEQUENCE_LENGTH - 1):
        moved = rows.copy()
        moved[:, hour, :] += 1.0
        assert not np.array_equal(tcn.predict_proba(moved), tcn.predict_proba(rows))


def test_the_hybrid_is_one_graph_with_one_lstm_node_over_both_inputs(hybrid: LSTMHybridPredictor,
                                                                     eth: tuple[InputRows, np.ndarray],
                                                                     tmp_path: Path) -> None:
    hybrid.export_onnx(tmp_path / "hybrid.onnx")
    graph = onnx.load(str(tmp_path / "hybrid.onnx")).graph
    lstm_nodes = [node for node in graph.node if node.op_type == "LSTM"]
    assert len(lstm_nodes) == 1 and not {node.op_type for node in graph.node} & {"Loop", "Scan"}
    assert all(a.i == 0 for a in lstm_nodes[0].attribute if a.name == "layout")  # sequence-major
    assert [i.name for i in graph.input] == ["features", "sequence"] and [o.name for o in graph.output] == [ONNX_OUTPUT]
    held_out = eth[0][TRAIN_ROWS + 72:]
    (onnx_p,) = make_session(tmp_path / "hybrid.onnx", ["CPUExecutionProvider"]).run(
        [ONNX_OUTPUT], hybrid.onnx_feed(held_out))
    assert float(np.max(np.abs(onnx_p - hybrid.predict_proba(held_out)))) <= 1e-5
    # both inputs matter: the features and the newest hour of the sequence
    features = InputRows({"features": held_out.parts["features"] + 1.0, "sequence": held_out.parts["sequence"]})
    sequence = held_out.parts["sequence"].copy()
    sequence[:, -1, :] += 1.0
    moved = InputRows({"features": held_out.parts["features"], "sequence": sequence})
    for changed in (features, moved):
        assert not np.array_equal(hybrid.predict_proba(changed), hybrid.predict_proba(held_out))


def test_early_stopping_stops_on_noise_labels_and_keeps_the_best_epoch() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, SEQUENCE_LENGTH, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=600)
    model = TCNPredictor(sequence_length=24, channels=8, levels=3, epochs=40, patience=2, learning_rate=0.03,
                         batch_size=64, validation_fraction=0.25, purge_rows=10, device="cpu")
    metrics = model.train(X, y)
    val_loss = model.history_["val_loss"]
    assert model.epochs_run_ == len(val_loss) < model.epochs and model.trained_on_ == "cpu"
    assert model.best_epoch_ == int(np.argmin(val_loss)) + 1 == model.epochs_run_ - model.patience
    assert metrics["rows"] == 150 and metrics["best_epoch"] == model.best_epoch_
    p = model.predict_proba(X[450:])
    kept_loss = float(-np.mean(np.log(p[np.arange(150), y[450:]])))
    assert kept_loss == pytest.approx(min(val_loss), rel=1e-5)
    assert kept_loss < val_loss[-1]


def test_the_purge_before_the_validation_tail_never_trains(hybrid: LSTMHybridPredictor,
                                                           eth: tuple[InputRows, np.ndarray]) -> None:
    X, y = eth[0][:TRAIN_ROWS], eth[1][:TRAIN_ROWS]
    fit, held = validation_split(TRAIN_ROWS, hybrid.validation_fraction, hybrid.purge_rows)
    purge = slice(fit.stop, held.start)
    assert purge.stop - purge.start == hybrid.purge_rows == 72
    rows = eth[0][TRAIN_ROWS + 72:]

    garbage = InputRows({kind: value.copy() for kind, value in X.parts.items()})
    garbage.parts["sequence"][purge] = np.nan  # one NaN trained on would make every weight NaN
    garbage.parts["features"][purge] = np.nan
    garbage_y = y.copy()
    garbage_y[purge] = (garbage_y[purge] + 1) % 3
    purged = LSTMHybridPredictor(**LSTMHybridPredictor.fast_params)
    purged.train(garbage, garbage_y)
    np.testing.assert_array_equal(purged.predict_proba(rows), hybrid.predict_proba(rows))

    last_trained_y = y.copy()
    last_trained_y[fit.stop - 2] = (last_trained_y[fit.stop - 2] + 1) % 3  # a fitted row (row_stride 2) before the purge
    control = LSTMHybridPredictor(**LSTMHybridPredictor.fast_params)
    control.train(X, last_trained_y)
    assert not np.array_equal(control.predict_proba(rows), hybrid.predict_proba(rows))


def test_the_pickle_holds_no_torch_object_and_loads_through_the_base_class(
        hybrid: LSTMHybridPredictor, eth: tuple[InputRows, np.ndarray], tmp_path: Path) -> None:
    rows = eth[0][-100:]
    hybrid.predict_proba(rows)  # builds the cached network, which must not travel
    hybrid.save(tmp_path / "hybrid.joblib")
    loaded = BasePredictor.load(tmp_path / "hybrid.joblib")  # the restricted unpickler refuses torch classes
    assert isinstance(loaded, LSTMHybridPredictor) and loaded.get_hyperparameters() == hybrid.get_hyperparameters()
    np.testing.assert_array_equal(loaded.predict_proba(rows), hybrid.predict_proba(rows))


_NOISE = re.compile(r"Warning|warn|^[IWEF]\d{4} |torch\.onnx|TorchScript|triton|LLVM", re.MULTILINE)
_BESIDE_TENSORFLOW = textwrap.dedent("""
    import sys
    import numpy as np
    from bse_predict.families.lstm import _tensorflow
    from bse_predict.families.lstm_hybrid import LSTMHybridPredictor
    from bse_predict.families.tcn import TCNPredictor
    from bse_predict.features.inputs import InputRows

    _tensorflow()  # TensorFlow's LLVM first: torch's triton would abort the process
    rng = np.random.default_rng(0)
    sequence = rng.normal(size=(300, 168, 4)).astype(np.float32)
    y = rng.integers(0, 3, 300)
    tcn = TCNPredictor(**{**TCNPredictor.fast_params, "validation_fraction": 0.0})
    tcn.train(sequence, y)
    tcn.export_onnx(sys.argv[1] + "/tcn.onnx")
    rows = InputRows({"features": rng.normal(size=(300, 82)), "sequence": sequence})
    hybrid = LSTMHybridPredictor(**{**LSTMHybridPredictor.fast_params, "validation_fraction": 0.0})
    hybrid.train(rows, y)
    hybrid.export_onnx(sys.argv[1] + "/hybrid.onnx")
    print("trained and exported")
""")


def test_fitting_and_exporting_beside_tensorflow_neither_aborts_nor_writes_library_noise(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", _BESIDE_TENSORFLOW, str(tmp_path)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "trained and exported" in done.stdout
    assert (tmp_path / "tcn.onnx").stat().st_size > 0 and (tmp_path / "hybrid.onnx").stat().st_size > 0
    noise = _NOISE.findall(done.stdout + done.stderr)
    assert not noise, f"library noise reached the user: {noise}\n{done.stderr[-2000:]}"
