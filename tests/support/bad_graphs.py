"""ONNX graphs that misbehave on purpose, built with the onnx helpers: a model that answers NaN,
one that takes at least a given time per call on the machine at hand, and a version that is
near-certain of a class picked from its input's digits, whatever happens. Real onnxruntime runs
them; the control plane, ensemble and challenger tests serve them in place of trained files."""

from __future__ import annotations

import functools
import json
import os
import shutil
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from bse_predict.features.definitions import FEATURE_NAMES
from bse_predict.serving.manifest import MANIFEST_NAME, load_manifest, sha256_of
from bse_predict.serving.parity_check import SAMPLE_OUTPUT, load_parity_sample

__all__ = ["calibrated_slow_graph", "nan_graph", "overconfident_copy", "slow_graph"]


def _graph(nodes: list, initializers: list, name: str) -> bytes:
    features = helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, len(FEATURE_NAMES)])
    out = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 3])
    model = helper.make_model(helper.make_graph(nodes, name, [features], [out], initializers),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9  # onnxruntime 1.31 reads at most IR 13; onnx 1.23 would write 14
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _zero_projection() -> list:
    return [helper.make_tensor("zeros", TensorProto.FLOAT, [len(FEATURE_NAMES), 3], [0.0] * (3 * len(FEATURE_NAMES)))]


def nan_graph() -> bytes:
    """Every row answers (NaN, NaN, NaN)."""
    nodes = [helper.make_node("MatMul", ["features", "zeros"], ["projected"]),
             helper.make_node("Add", ["projected", "nan_bias"], ["probabilities"])]
    bias = helper.make_tensor("nan_bias", TensorProto.FLOAT, [3], [float("nan")] * 3)
    return _graph(nodes, [*_zero_projection(), bias], "always_nan")


def slow_graph(size: int) -> bytes:
    """Valid (1/3, 1/3, 1/3) rows after a size x size matrix product that depends on the input
    (so it cannot be folded away at load)."""
    nodes = [
        helper.make_node("ReduceMean", ["features"], ["mean"], keepdims=1),
        helper.make_node("Sigmoid", ["mean"], ["scale"]),
        helper.make_node("ConstantOfShape", ["square_shape"], ["ones"],
                         value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])),
        helper.make_node("Mul", ["ones", "scale"], ["square"]),
        helper.make_node("MatMul", ["square", "square"], ["product"]),
        helper.make_node("ReduceSum", ["product"], ["total"], keepdims=1),
        helper.make_node("Mul", ["total", "zero"], ["nothing"]),
        helper.make_node("MatMul", ["features", "zeros"], ["projected"]),
        helper.make_node("Add", ["projected", "third"], ["base"]),
        helper.make_node("Add", ["base", "nothing"], ["probabilities"]),
    ]
    initializers = [
        *_zero_projection(),
        helper.make_tensor("square_shape", TensorProto.INT64, [2], [size, size]),
        helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("third", TensorProto.FLOAT, [3], [1 / 3] * 3),
    ]
    return _graph(nodes, initializers, "slow")


@functools.cache
def calibrated_slow_graph(min_seconds: float = 1.0) -> bytes:
    """A slow graph that takes at least ``min_seconds`` a call on this machine, quiet or busy: a
    fixed size was ~1 s on a loaded machine and under the 300 ms budget on a quiet one."""
    import numpy as np
    import onnxruntime as ort

    from bse_predict.serving.onnx_runner import make_session

    size = 1200
    while True:
        graph = slow_graph(size)
        path = Path(os.environ.get("TMPDIR", "/tmp")) / f"slow-{os.getpid()}-{size}.onnx"
        path.write_bytes(graph)
        session: ort.InferenceSession = make_session(path, ["CPUExecutionProvider"])
        path.unlink()
        row = {"features": np.ones((1, len(FEATURE_NAMES)), dtype=np.float32)}
        started = time.perf_counter()
        session.run(None, row)
        if time.perf_counter() - started >= min_seconds or size >= 8000:
            return graph
        size = int(size * 1.35)


_SURE = 0.98
_UNSURE = 0.01


def _overconfident_graph() -> bytes:
    """Every row answers 0.98 for one class and 0.01 for the others, the class picked by the fractional
    part of 100 x the row's feature sum: near-certain and right about a third of the time whatever the
    market does (a version always sure of "up" is right for days on end in a rally)."""
    nodes = [helper.make_node("ReduceSum", ["features", "feature_axis"], ["total"], keepdims=0),
             helper.make_node("Mul", ["total", "hundred"], ["scaled"]),
             helper.make_node("Floor", ["scaled"], ["whole"]),
             helper.make_node("Sub", ["scaled", "whole"], ["fraction"]),
             helper.make_node("Mul", ["fraction", "three"], ["spread"]),
             helper.make_node("Floor", ["spread"], ["picked"]),
             helper.make_node("Min", ["picked", "last_class"], ["class_float"]),
             helper.make_node("Cast", ["class_float"], ["class_index"], to=TensorProto.INT64),
             helper.make_node("OneHot", ["class_index", "depth", "answers"], ["probabilities"], axis=-1)]
    initializers = [helper.make_tensor("feature_axis", TensorProto.INT64, [1], [1]),
                    helper.make_tensor("hundred", TensorProto.FLOAT, [], [100.0]),
                    helper.make_tensor("three", TensorProto.FLOAT, [], [3.0]),
                    helper.make_tensor("last_class", TensorProto.FLOAT, [], [2.0]),
                    helper.make_tensor("depth", TensorProto.INT64, [], [3]),
                    helper.make_tensor("answers", TensorProto.FLOAT, [2], [_UNSURE, _SURE])]
    return _graph(nodes, initializers, "overconfident")


def overconfident_copy(models_dir: Path, source: str, name: str, created_after: timedelta = timedelta(days=1)) -> None:
    """Version ``source`` copied as ``name``, created ``created_after`` later (so the newer or, negative, the
    older of the two), whose served model is :func:`_overconfident_graph`: far worse than any honest model on
    live outcomes in any stretch of the market. Its recorded parity answers are the graph's own on the
    recorded inputs, so a promote's check accepts it."""
    import onnxruntime as ort

    target_dir = models_dir / name
    shutil.copytree(models_dir / source, target_dir)
    manifest = load_manifest(target_dir)
    graph = _overconfident_graph()
    for entry in manifest.models:
        if entry.name == manifest.served_model:
            (target_dir / entry.file).write_bytes(graph)
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    for key, report in manifest.parity.items():  # the recorded answers it must reproduce before a promote
        if key.startswith(f"{manifest.served_model}/") and report.sample_file is not None:
            sample = load_parity_sample(target_dir / report.sample_file)
            (answers,) = session.run(None, {"features": sample.inputs["features"].astype(np.float32)})
            np.savez(target_dir / report.sample_file, **sample.inputs, **{SAMPLE_OUTPUT: answers.astype(np.float64)})
    fields = json.loads(manifest.model_dump_json())
    fields.update(version=name, files_sha256={f: sha256_of(target_dir / f) for f in manifest.files_sha256},
                  created_at=(manifest.created_at + created_after).isoformat())
    (target_dir / MANIFEST_NAME).write_text(json.dumps(fields))
