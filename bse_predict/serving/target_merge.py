"""One ONNX model of all the targets of a served model, so that one ``run`` answers them all.

Each target's graph keeps its own nodes, renamed under a prefix per target, and
reads the same inputs. A constant that two targets hold under the same name
with the same bytes is kept once; onnxruntime's common-subexpression
elimination then computes once what the targets compute alike: the HMM's
emissions and filter when its targets share one regime model (only the outcome
maps differ: three times less work, measured in docs/performance.md), the
sequence transforms before each target's own weights. Every output is computed
by the same kernels as in the target's own session, so the numbers are the same
to the bit (tests/unit/test_target_merge.py).

Written without the ``onnx`` package, which a serving install lacks: the models are
read and written through a subset of ``onnx.proto`` (:mod:`bse_predict.integrity.proto_subset`),
every field outside it (the trees' attributes, tensor data) kept as it was.
Models that cannot be merged safely are left alone (:func:`merge_targets` answers
None): different IR versions or opsets, inputs of one name but different types,
sparse constants, or a node with a subgraph (``Scan``, ``Loop``, ``If``), whose
names the renaming would not follow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from bse_predict.integrity.proto_subset import Subset, message_class

__all__ = ["MergedTargets", "merge_targets", "target_output"]

_SUBSET: Subset = {
    "StringStringEntryProto": (("key", 1, "bytes", False), ("value", 2, "bytes", False)),
    "TensorProto": (("name", 8, "bytes", False),),
    "Dimension": (("dim_value", 1, "int64", False),),
    "TensorShapeProto": (("dim", 1, "Dimension", True),),
    "TypeProtoTensor": (("elem_type", 1, "int32", False), ("shape", 2, "TensorShapeProto", False)),
    "TypeProto": (("tensor_type", 1, "TypeProtoTensor", False),),
    "ValueInfoProto": (("name", 1, "bytes", False), ("type", 2, "TypeProto", False)),
    "AttributeProto": (("g", 6, "bytes", False), ("graphs", 11, "bytes", True)),
    "NodeProto": (("input", 1, "bytes", True), ("output", 2, "bytes", True), ("name", 3, "bytes", False),
                  ("attribute", 5, "AttributeProto", True)),
    "GraphProto": (("node", 1, "NodeProto", True), ("name", 2, "bytes", False),
                   ("initializer", 5, "TensorProto", True), ("input", 11, "ValueInfoProto", True),
                   ("output", 12, "ValueInfoProto", True), ("value_info", 13, "ValueInfoProto", True),
                   ("sparse_initializer", 15, "bytes", True)),
    "ModelProto": (("ir_version", 1, "int64", False), ("graph", 7, "GraphProto", False),
                   ("opset_import", 8, "bytes", True), ("metadata_props", 14, "StringStringEntryProto", True)),
}


@dataclass(frozen=True)
class MergedTargets:
    model: bytes
    """The serialised merged model."""
    metadata: dict[str, dict[str, str]]
    """Each target's own metadata properties (``regime_states``, ...)."""
    inputs: dict[str, tuple[str, ...]]
    """Each target's own inputs."""


def target_output(index: int, name: str) -> str:
    """The merged model's name of target number ``index``'s value ``name``."""
    return f"target{index}/{name}"


@cache
def _model_class() -> Any:
    return message_class(_SUBSET, "bse_predict.onnx_merge_subset", "ModelProto")


def merge_targets(models: Mapping[str, bytes]) -> MergedTargets | None:
    """The targets' models (serialised, in serving order) as one; None when they cannot be merged."""
    protos = [_model_class().FromString(data) for data in models.values()]
    first = protos[0]
    if any(p.ir_version != first.ir_version or sorted(p.opset_import) != sorted(first.opset_import) for p in protos):
        return None
    if any(p.graph.sparse_initializer or any(a.g or a.graphs for n in p.graph.node for a in n.attribute)
           for p in protos):
        return None
    inputs: dict[bytes, Any] = {}
    for proto in protos:
        constants = {c.name for c in proto.graph.initializer}
        for value in (v for v in proto.graph.input if v.name not in constants):
            if _tensor_type(inputs.setdefault(value.name, value)) != _tensor_type(value):
                return None
    merged = _model_class()()
    merged.CopyFrom(first)
    graph = merged.graph
    for field in ("node", "initializer", "input", "output", "value_info", "metadata_props"):
        (merged if field == "metadata_props" else graph).ClearField(field)
    graph.name = b"targets"
    graph.input.extend(inputs.values())
    shared: dict[bytes, bytes] = {}
    for index, proto in enumerate(protos):
        _add_target(graph, proto, index, set(inputs), shared)
    metadata = {target: {p.key.decode(): p.value.decode() for p in proto.metadata_props}
                for target, proto in zip(models, protos, strict=True)}
    own_inputs = {target: tuple(v.name.decode() for v in proto.graph.input
                                if v.name not in {c.name for c in proto.graph.initializer})
                  for target, proto in zip(models, protos, strict=True)}
    return MergedTargets(merged.SerializeToString(), metadata, own_inputs)


def _tensor_type(value: Any) -> tuple[int, tuple[int, ...]]:
    """Element type and fixed dimensions (0 for a named one: exporters name the batch differently)."""
    tensor = value.type.tensor_type
    return tensor.elem_type, tuple(d.dim_value for d in tensor.shape.dim)


def _add_target(graph: Any, proto: Any, index: int, inputs: set[bytes], shared: dict[bytes, bytes]) -> None:
    """Append target ``index``'s constants, nodes and outputs to ``graph``, its names prefixed, its
    constants shared where ``shared`` (name -> bytes, filled here) already holds the same."""
    renamed = _add_constants(graph, proto, index, shared)
    own = inputs | {c.name for c in proto.graph.initializer if c.name not in renamed}

    def name_of(value: bytes) -> bytes:
        if not value or value in renamed:
            return renamed.get(value, value)
        return value if value in own else _prefixed(index, value)

    for node in proto.graph.node:
        copy = graph.node.add()
        copy.CopyFrom(node)
        copy.input[:] = [name_of(v) for v in node.input]
        copy.output[:] = [_prefixed(index, v) if v else v for v in node.output]
        copy.name = _prefixed(index, node.name or node.output[0])
    for value in proto.graph.output:
        copy = graph.output.add()
        copy.CopyFrom(value)
        copy.name = _prefixed(index, value.name)


def _add_constants(graph: Any, proto: Any, index: int, shared: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """Add ``proto``'s constants to ``graph``: one already there under the same name with the same
    bytes is shared, one of a taken name is renamed for this target. Returns the renames."""
    renamed: dict[bytes, bytes] = {}
    for constant in proto.graph.initializer:
        data = constant.SerializeToString()
        if shared.get(constant.name) == data:
            continue
        copy = graph.initializer.add()
        copy.CopyFrom(constant)
        if constant.name in shared:
            renamed[constant.name] = copy.name = _prefixed(index, constant.name)
        else:
            shared[constant.name] = data
    return renamed


def _prefixed(index: int, name: bytes) -> bytes:
    return target_output(index, name.decode()).encode()
