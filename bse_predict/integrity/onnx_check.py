"""What an ONNX model this project serves may reference: nothing outside its own bytes.

Two things in a model file make onnxruntime reach past the bytes that were hashed:
tensors whose data lives in another file (``data_location: EXTERNAL``, read from a
path the model names) and operators of a domain that only a custom-op library
registered on the session implements. Every graph this project exports (scikit-learn
and XGBoost trees, the LSTM via tf2onnx, the HMM, k-NN and ensemble graphs, the
legacy forests) uses only the default and ``ai.onnx.ml`` domains and embeds its
tensors, so :func:`check_onnx_model` refuses anything else: in the main graph, in
every subgraph (``If``/``Loop``/``Scan`` branches), in training graphs, and any model
that defines local functions (operators of a domain of its own).

A serving install has no ``onnx`` package (it is in the ``train`` extra), but it has
``protobuf``, which onnxruntime itself requires. The model is parsed with protobuf's
C parser against :data:`_SUBSET`, the few ``onnx.proto`` fields that lead to a node, a
tensor or an opset import; every other field (the trees' big attribute arrays) stays
an unread unknown field. Same parser rules as onnxruntime's own protobuf, so a file
cannot mean one thing here and another there; the field numbers are checked against
the ``onnx`` package's descriptors in the tests.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from bse_predict.errors import ManifestError
from bse_predict.integrity.proto_subset import message_class

__all__ = ["ALLOWED_DOMAINS", "check_onnx_model"]

ALLOWED_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
"""The default domain (also spelt ``ai.onnx``) and the traditional-ML one the tree ensembles use."""

_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL
_PACKAGE = "bse_predict.onnx_subset"

# message -> (field, number, type, repeated): a subset of onnx.proto (proto2), numbers as there
_SUBSET: dict[str, tuple[tuple[str, int, str, bool], ...]] = {
    "OperatorSetIdProto": (("domain", 1, "bytes", False),),
    "TensorProto": (("name", 8, "bytes", False), ("external_data", 13, "bytes", True),
                    ("data_location", 14, "int32", False)),
    "SparseTensorProto": (("values", 1, "TensorProto", False), ("indices", 2, "TensorProto", False)),
    "AttributeProto": (("t", 5, "TensorProto", False), ("g", 6, "GraphProto", False),
                       ("tensors", 10, "TensorProto", True), ("graphs", 11, "GraphProto", True),
                       ("sparse_tensor", 22, "SparseTensorProto", False),
                       ("sparse_tensors", 23, "SparseTensorProto", True)),
    "NodeProto": (("attribute", 5, "AttributeProto", True), ("domain", 7, "bytes", False)),
    "GraphProto": (("node", 1, "NodeProto", True), ("initializer", 5, "TensorProto", True),
                   ("sparse_initializer", 15, "SparseTensorProto", True)),
    "TrainingInfoProto": (("initialization", 1, "GraphProto", False), ("algorithm", 2, "GraphProto", False)),
    "ModelProto": (("graph", 7, "GraphProto", False), ("opset_import", 8, "OperatorSetIdProto", True),
                   ("training_info", 20, "TrainingInfoProto", True), ("functions", 25, "bytes", True)),
}


@cache
def _model_class() -> Any:
    """The message class of :data:`_SUBSET`'s ``ModelProto``."""
    return message_class(_SUBSET, _PACKAGE, "ModelProto")


def _check_domain(domain: bytes, file: str) -> None:
    text = domain.decode("utf-8", "replace")
    if text not in ALLOWED_DOMAINS:
        raise ManifestError(f"{file}: operator domain '{text}' is not one of the standard domains "
                            f"{sorted(ALLOWED_DOMAINS)}: custom operators are refused")


def check_onnx_model(data: bytes, file: str) -> None:
    """Raise :class:`ManifestError` unless the serialised model ``data`` (named ``file`` in
    messages) uses only :data:`ALLOWED_DOMAINS`, defines no local functions and embeds every tensor."""
    from google.protobuf.message import DecodeError

    model = _model_class()()
    try:
        model.ParseFromString(data)
    except DecodeError:
        raise ManifestError(f"{file} is not a readable ONNX model") from None
    if model.functions:
        raise ManifestError(f"{file}: defines local functions: custom operators are refused")
    for opset in model.opset_import:
        _check_domain(opset.domain, file)
    graphs = [model.graph, *(g for info in model.training_info for g in (info.initialization, info.algorithm))]
    tensors: list[Any] = []
    while graphs:  # subgraphs are queued, not recursed into
        graph = graphs.pop()
        tensors += graph.initializer
        sparse = list(graph.sparse_initializer)
        for node in graph.node:
            _check_domain(node.domain, file)
            for attribute in node.attribute:
                graphs += [attribute.g, *attribute.graphs]
                tensors += [attribute.t, *attribute.tensors]
                sparse += [attribute.sparse_tensor, *attribute.sparse_tensors]
        tensors += [t for s in sparse for t in (s.values, s.indices)]
    for tensor in tensors:
        if tensor.data_location == _EXTERNAL or tensor.external_data:
            raise ManifestError(f"{file}: tensor '{tensor.name.decode('utf-8', 'replace')}' keeps its data outside "
                                f"the file (external data), where the sha256 does not reach: refused")
