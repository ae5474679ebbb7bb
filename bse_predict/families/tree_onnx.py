"""The graph fixes shared by the boosted-tree exports (onnxmltools' XGBoost and LightGBM converters).

Both converters emit a ``TreeEnsembleClassifier`` with an integer ``label`` output beside the
class probabilities. The served graph keeps only the probabilities, as ``probabilities``
[batch, 3], declares the default-domain opset its ``Identity`` needs and caps the ai.onnx.ml
opset and the IR version at what the pinned onnxruntime reads.
"""

from __future__ import annotations

from typing import Any

from bse_predict.families.base import ONNX_OUTPUT
from bse_predict.families.onnx_limits import ML_OPSET, cap_ir_version

__all__ = ["probabilities_only"]

_RAW = "probabilities_raw"


def probabilities_only(proto: Any, opset: int, n_classes: int) -> Any:
    """Keep only the converter's float output, renamed ``probabilities`` [batch, ``n_classes``], drop the
    nodes that no longer feed an output, set the opsets (default domain ``opset``, ai.onnx.ml at most
    ``ML_OPSET``) and the IR version; checked with ``onnx.checker``."""
    import onnx
    from onnx import TensorProto, helper

    graph = proto.graph
    produced = [o.name for o in graph.output if o.type.tensor_type.elem_type == TensorProto.FLOAT]
    if len(produced) != 1:
        raise ValueError(f"expected one float output from the tree converter, got {produced}")
    for output in list(graph.output):
        graph.output.remove(output)
    source = produced[0]
    if source == ONNX_OUTPUT:
        for node in graph.node:
            node.output[:] = [_RAW if name == ONNX_OUTPUT else name for name in node.output]
        source = _RAW
    graph.node.append(helper.make_node("Identity", [source], [ONNX_OUTPUT]))
    graph.output.append(helper.make_tensor_value_info(ONNX_OUTPUT, TensorProto.FLOAT, [None, n_classes]))
    _drop_dead_nodes(graph)
    _set_opsets(proto, opset)
    cap_ir_version(proto)
    onnx.checker.check_model(proto)
    return proto


def _drop_dead_nodes(graph: Any) -> None:
    """Remove the nodes whose outputs reach no graph output (the converters' label branch)."""
    needed = {output.name for output in graph.output}
    kept = []
    for node in reversed(graph.node):
        if needed.intersection(node.output):
            kept.append(node)
            needed.update(node.input)
    unused_initializers = [i for i in graph.initializer if i.name not in needed]
    del graph.node[:]
    graph.node.extend(reversed(kept))
    for initializer in unused_initializers:
        graph.initializer.remove(initializer)


def _set_opsets(proto: Any, opset: int) -> None:
    """The default domain (for the Identity) at ``opset``; ai.onnx.ml no newer than ``ML_OPSET``."""
    versions = {entry.domain: entry for entry in proto.opset_import}
    if "" not in versions:
        versions[""] = proto.opset_import.add(domain="", version=opset)
    if "ai.onnx.ml" in versions:
        versions["ai.onnx.ml"].version = min(versions["ai.onnx.ml"].version, ML_OPSET)
