"""The targets of a model merged into one ONNX model answer what each target's own session answers, to
the bit; what they compute alike is computed once; graphs that cannot be merged safely are left alone."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from bse_predict.families.hmm_regime import HMMRegimePredictor
from bse_predict.families.regime_graphs import filter_graph, regime_feature_graph
from bse_predict.features.sequences import SEQUENCE_LOOKBACK, sequence_rows
from bse_predict.serving.target_merge import _SUBSET, merge_targets, target_output

NESTED = {"TypeProtoTensor": onnx.TypeProto.Tensor, "Dimension": onnx.TensorShapeProto.Dimension}


def _grid(hours: int, seed: int) -> np.ndarray:
    """A random walk with a calm and a wild stretch, as float64[hours, 5] OHLCV."""
    rng = np.random.default_rng(seed)
    scale = np.where(np.arange(hours) % 400 < 200, 0.004, 0.02)
    close = 100 * np.exp(np.cumsum(rng.normal(0, scale)))
    spread = np.abs(rng.normal(0, scale)) * close
    return np.stack([close, close + spread, close - spread, close, rng.uniform(1, 10, hours)], axis=1)


@pytest.fixture(scope="module")
def fitted() -> tuple[HMMRegimePredictor, np.ndarray]:
    sequences = sequence_rows(_grid(1600, 3), np.arange(SEQUENCE_LOOKBACK, 1600))
    labels = np.random.default_rng(4).integers(0, 3, len(sequences))
    predictor = HMMRegimePredictor(n_states=3, n_iter=10)
    predictor.train(sequences, labels)
    return predictor, sequences


def _session(model: bytes, level: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
             optimized: str | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = level
    if optimized:
        options.optimized_model_filepath = optimized
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def test_the_merge_reads_the_fields_onnx_defines() -> None:
    for message, fields in _SUBSET.items():
        descriptor = NESTED.get(message, getattr(onnx, message, None)).DESCRIPTOR
        for name, number, kind, repeated in fields:
            real = descriptor.fields_by_name[name]
            assert real.number == number and real.is_repeated == repeated, f"{message}.{name}"
            if kind in _SUBSET:
                assert real.message_type.full_name.endswith(
                    NESTED[kind].DESCRIPTOR.full_name if kind in NESTED else f".{kind}"), f"{message}.{name}"


def test_targets_sharing_a_regime_model_answer_as_alone_and_filter_once(fitted, tmp_path) -> None:
    predictor, sequences = fitted
    maps = [np.random.default_rng(seed).dirichlet(np.ones(3), size=3) for seed in range(3)]
    models = {f"{t}%": filter_graph(predictor.regimes_, m).SerializeToString() for t, m in zip((1, 2, 5), maps)}
    merged = merge_targets(models)
    assert merged is not None and merged.inputs == {t: ("sequence",) for t in models}
    assert merged.metadata["2%"]["regime_states"] == ",".join(predictor.regimes_.state_names_)
    rows = {"sequence": sequences[-50:].astype(np.float32)}
    together = _session(merged.model)
    for index, model in enumerate(models.values()):
        alone = _session(model)
        names = [o.name for o in alone.get_outputs()]
        for name, expected in zip(names, alone.run(names, rows), strict=True):
            np.testing.assert_array_equal(together.run([target_output(index, name)], rows)[0], expected)
    level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    _session(next(iter(models.values())), level, str(tmp_path / "one.onnx"))
    _session(merged.model, level, str(tmp_path / "merged.onnx"))
    one, three = (len(onnx.load(tmp_path / f).graph.node) for f in ("one.onnx", "merged.onnx"))
    assert three < one + 2 * 5  # the filter once; per other target only its outcome map's few nodes


def test_targets_with_their_own_fits_still_answer_as_alone(fitted) -> None:
    predictor, sequences = fitted
    other = HMMRegimePredictor(n_states=3, n_iter=10, seed=11)
    other.train(sequences[:700], np.zeros(700, dtype=np.int64))
    models = {"1%": filter_graph(predictor.regimes_, np.full((3, 3), 1 / 3)).SerializeToString(),
              "2%": filter_graph(other.regimes_, np.full((3, 3), 1 / 3)).SerializeToString()}
    merged = merge_targets(models)
    assert merged is not None
    rows = {"sequence": sequences[:20].astype(np.float32)}
    together = _session(merged.model)
    for index, model in enumerate(models.values()):
        expected = _session(model).run(["regime_probabilities"], rows)[0]
        np.testing.assert_array_equal(together.run([target_output(index, "regime_probabilities")], rows)[0], expected)


def test_graphs_with_subgraphs_or_other_inputs_are_left_alone(fitted) -> None:
    predictor, _ = fitted
    scan = regime_feature_graph(predictor.regimes_).SerializeToString()
    assert merge_targets({"1%": scan, "2%": scan}) is None
    plain = filter_graph(predictor.regimes_)
    shorter = filter_graph(predictor.regimes_, hours=24)  # the same input name, another fixed length
    assert merge_targets({"1%": plain.SerializeToString(), "2%": shorter.SerializeToString()}) is None
