"""One ONNX graph for a whole ensemble: every member's graph, the combiner, the failure handling.

Each member graph is copied in under a prefix (``m0/``, ``m1/`` …) and reads the
shared inputs (``features``, ``sequence``) through an Identity. The combiner
is built from plain ONNX operators and computes what :mod:`bse_predict.ensembles.combiners`
computes: a member row with a NaN is dropped (``IsNaN`` → ``Where``), the others
are renormalised, and the extra output ``degraded`` bool[B] says so. A spec
with a climatology member adds it as one more member, last: a constant [1, 3]
expanded to the batch (never NaN). With a
regime member, its ``regime_probabilities`` pass through as an output and the
metadata property ``regime_states`` names the states. One
``InferenceSession.run`` answers the whole ensemble for a batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bse_predict.ensembles.combiners import EPS, CombinerSpec

__all__ = ["ensemble_graph", "DEGRADED_OUTPUT", "REGIME_OUTPUT"]

DEGRADED_OUTPUT = "degraded"
REGIME_OUTPUT = "regime_probabilities"
_SHARED_INPUTS = {"features", "sequence"}


class _Graph:
    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._count = 0

    def const(self, value: Any, dtype: Any = np.float32) -> str:
        from onnx import numpy_helper

        self._count += 1
        name = f"ens/c{self._count}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs: Any) -> str:
        from onnx import helper

        self._count += 1
        output = f"ens/{op.lower()}{self._count}"
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output


def _member_outputs(g: _Graph, index: int, proto: Any, opsets: dict[str, int],
                    wanted: Sequence[str]) -> dict[str, str]:
    """Copy a member graph in under ``m{index}/``; return its outputs' new names."""
    from onnx import compose, helper

    prefix = f"m{index}/"
    prefixed = compose.add_prefix(proto, prefix)
    for graph_input in prefixed.graph.input:
        original = graph_input.name[len(prefix):]
        if original not in _SHARED_INPUTS:
            raise ValueError(f"member {index} reads input {original!r}; an ensemble shares only {_SHARED_INPUTS}")
        g.nodes.append(helper.make_node("Identity", [original], [graph_input.name], name=graph_input.name))
    g.nodes.extend(prefixed.graph.node)
    g.inits.extend(prefixed.graph.initializer)
    for opset in prefixed.opset_import:
        opsets[opset.domain] = max(opsets.get(opset.domain, 0), opset.version)
    names = {o.name[len(prefix):]: o.name for o in prefixed.graph.output}
    return {name: names[name] for name in wanted if name in names}


def _combine(g: _Graph, members: list[str], spec: CombinerSpec, regime: str | None) -> tuple[str, str]:
    """Member probabilities [B, 3] each -> (probabilities [B, 3], degraded bool [B])."""
    axis1 = g.const([1], np.int64)
    zero = g.const(0.0)
    if spec.climatology is not None and spec.strategy != "stacking":
        members = [*members, g.node("Expand", [g.const(spec.climatology[None, :]), g.node("Shape", [members[0]])])]
    bads, cleans = [], []
    for p in members:
        nan = g.node("IsNaN", [p])
        bads.append(g.node("Cast", [g.node("ReduceMax", [g.node("Cast", [nan], to=1)], axes=[1], keepdims=1)], to=9))
        cleans.append(g.node("Where", [nan, zero, p]))
    bad_all = g.node("Concat", bads, axis=1)  # [B, M] bool
    degraded = g.node("Cast", [g.node("ReduceMax", [g.node("Cast", [bad_all], to=1)], axes=[1], keepdims=0)], to=9)
    if spec.strategy == "stacking":
        assert spec.stacking is not None
        logs = []
        for i, (p, bad) in enumerate(zip(members, bads, strict=True)):
            log_p = g.node("Log", [g.node("Max", [g.node("Where", [g.node("IsNaN", [p]), g.const(1.0), p]),
                                                  g.const(EPS)])])
            logs.append(g.node("Where", [bad, g.const(spec.stacking.mean_log_probs[i][None, :]), log_p]))
        logits = g.node("Add", [g.node("MatMul", [g.node("Concat", logs, axis=1), g.const(spec.stacking.coef.T)]),
                                g.const(spec.stacking.intercept)])
        return g.node("Softmax", [logits], axis=1), degraded
    weights = g.const(spec.weights[None, :])  # [1, M]
    if spec.strategy == "regime":
        assert spec.by_regime is not None and regime is not None
        state = g.node("ArgMax", [g.node("Where", [g.node("IsNaN", [regime]), g.const(-1.0), regime])],
                       axis=1, keepdims=0)
        chosen = g.node("Gather", [g.const(spec.by_regime), state], axis=0)  # [B, M]
        known = g.node("Not", [g.node("Cast", [g.node("ReduceMax", [g.node("Cast", [g.node("IsNaN", [regime])],
                                                                            to=1)], axes=[1], keepdims=1)], to=9)])
        weights = g.node("Where", [known, chosen, weights])
    elif spec.strategy == "dynamic":
        confidences = []
        for p in cleans:
            up = g.node("Slice", [p, g.const([0], np.int64), g.const([1], np.int64), axis1])
            down = g.node("Slice", [p, g.const([1], np.int64), g.const([2], np.int64), axis1])
            touched = g.node("Add", [up, down])
            # bse_predict.scoring.probabilities.confidence: 0.5 where nothing is touched
            any_touched = g.node("Greater", [touched, g.const(0.0)])
            c = g.node("Div", [g.node("Max", [up, down]), g.node("Where", [any_touched, touched, g.const(1.0)])])
            confidences.append(g.node("Where", [any_touched, c, g.const(0.5)]))
        weights = g.node("Mul", [weights, g.node("Pow", [g.node("Concat", confidences, axis=1),
                                                          g.const(spec.power)])])
    elif spec.strategy != "weighted":
        raise ValueError(f"unknown strategy {spec.strategy!r}")
    effective = g.node("Where", [bad_all, zero, weights])  # [B, M]
    columns = [f"ens/w{i}" for i in range(len(members))]
    from onnx import helper

    g.nodes.append(helper.make_node("Split", [effective], columns, name="ens/split_w", axis=1))
    weighted = g.node("Sum", [g.node("Mul", [c, w]) for c, w in zip(cleans, columns, strict=True)])
    total = g.node("ReduceSum", [effective, axis1], keepdims=1)
    return g.node("Div", [weighted, total]), degraded


def ensemble_graph(member_protos: Sequence[Any], spec: CombinerSpec, regime_member: int | None = None,
                   regime_states: Sequence[str] = ()) -> Any:
    """Members' ModelProtos -> one ModelProto with outputs ``probabilities``, ``degraded`` and,
    with ``regime_member`` (the index of a member that outputs ``regime_probabilities``), those."""
    from onnx import TensorProto, checker, helper

    from bse_predict.families.onnx_limits import TARGET_OPSET, cap_ir_version

    g = _Graph()
    opsets: dict[str, int] = {"": TARGET_OPSET}
    shapes: dict[str, Any] = {}
    members, regime = [], None
    for i, proto in enumerate(member_protos):
        for graph_input in proto.graph.input:
            shapes.setdefault(graph_input.name, graph_input)
        wanted = ["probabilities", REGIME_OUTPUT] if i == regime_member else ["probabilities"]
        outputs = _member_outputs(g, i, proto, opsets, wanted)
        members.append(outputs["probabilities"])
        regime = outputs.get(REGIME_OUTPUT, regime)
    probabilities, degraded = _combine(g, members, spec, regime)
    g.nodes.append(helper.make_node("Identity", [probabilities], ["probabilities"], name="probabilities"))
    g.nodes.append(helper.make_node("Identity", [degraded], [DEGRADED_OUTPUT], name=DEGRADED_OUTPUT))
    outputs = [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 3]),
               helper.make_tensor_value_info(DEGRADED_OUTPUT, TensorProto.BOOL, [None])]
    if regime is not None:
        g.nodes.append(helper.make_node("Identity", [regime], [REGIME_OUTPUT], name=REGIME_OUTPUT))
        outputs.append(helper.make_tensor_value_info(REGIME_OUTPUT, TensorProto.FLOAT, [None, len(regime_states)]))
    inputs = [shapes[name] for name in sorted(shapes)]
    graph = helper.make_graph(g.nodes, "ensemble", inputs, outputs, g.inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(opsets.items())],
                              producer_name="bse-predict")
    props = {"strategy": spec.strategy}
    if regime is not None:
        props["regime_states"] = ",".join(regime_states)
    helper.set_model_props(proto, props)
    cap_ir_version(proto)
    checker.check_model(proto)
    return proto
