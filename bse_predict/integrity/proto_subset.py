"""Message classes for a subset of ``onnx.proto``, built without the ``onnx`` package.

A serving install has ``protobuf`` (onnxruntime requires it) but not ``onnx``. A
subset lists, per message, the fields a reader needs; every other field stays an
unknown field, kept as it was when the message is written back.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Subset", "message_class"]

Subset = dict[str, tuple[tuple[str, int, str, bool], ...]]
"""message -> (field, number, type, repeated); a type is ``bytes``, ``int32``, ``int64`` or a message of the subset."""


def message_class(subset: Subset, package: str, message: str) -> Any:
    """The class of ``message`` of ``subset``, in a descriptor pool of its own (no clash with the
    ``onnx`` package's messages where that is installed)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field_type = descriptor_pb2.FieldDescriptorProto
    scalars = {"bytes": field_type.TYPE_BYTES, "int32": field_type.TYPE_INT32, "int64": field_type.TYPE_INT64}
    file = descriptor_pb2.FileDescriptorProto(name=f"{package}.proto", package=package, syntax="proto2")
    for message_name, fields in subset.items():
        descriptor = file.message_type.add(name=message_name)
        for name, number, kind, repeated in fields:
            field = descriptor.field.add(name=name, number=number,
                                         label=field_type.LABEL_REPEATED if repeated else field_type.LABEL_OPTIONAL)
            if kind in scalars:
                field.type = scalars[kind]
            else:
                field.type, field.type_name = field_type.TYPE_MESSAGE, f".{package}.{kind}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.{message}"))
