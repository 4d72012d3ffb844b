"""TF Serving's REST JSON formats (`tensorflow_serving/util/json_tensor.cc`), both ways.

- Predict: `{"signature_name": ..., "instances": [...]}` (row format: one
  element per example; an object per example when the signature has several
  inputs) or `{"inputs": ...}` (columnar: the tensor, or an object of named
  tensors); a string value is UTF-8 bytes, `{"b64": "..."}` is base64 bytes.
  The answer is `{"predictions": [...]}` (row) or `{"outputs": ...}`
  (columnar); string outputs whose name ends in `_bytes` come back as
  `{"b64": ...}`.
- Classify and Regress: `{"signature_name": ..., "context": {...},
  "examples": [{feature: value}]}`, a JSON integer an int64 feature, a
  number with a decimal point a float feature, a string (or `{"b64": ...}`)
  bytes; answered with `{"results": [[[label, score], ...], ...]}` and
  `{"results": [value, ...]}`.
- Errors: `{"error": "..."}`.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import input_pb2

from serving.servable import InvalidRequestError
from serving.tensors import _DTYPES, proto_from_array

B64, BYTES_SUFFIX = "b64", "_bytes"


def parse_body(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body or b"")
    except (ValueError, UnicodeDecodeError) as err:
        raise InvalidRequestError(f"JSON Parse error: {err}") from None
    if not isinstance(document, dict):
        raise InvalidRequestError("JSON Parse error: the request must be a JSON object")
    return document


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {B64}


def _bytes_of(value: Any) -> bytes:
    if _is_b64(value):
        try:
            return base64.b64decode(value[B64], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise InvalidRequestError("Unable to base64 decode") from None
    if isinstance(value, str):
        return value.encode()
    raise InvalidRequestError(f"JSON Value: {json.dumps(value)[:60]} not formatted correctly for a string")


def _strings(value: Any) -> Any:
    return [_strings(v) for v in value] if isinstance(value, list) else _bytes_of(value)


def tensor_of(value: Any, name: str, dtype_enum: int):
    """A TensorProto for JSON `value` (nested lists) as the signature's input dtype."""
    numpy_type = _DTYPES.get(dtype_enum, (None,))[0]
    try:
        if numpy_type is object:
            array = np.array(_strings(value), dtype=object)
        elif numpy_type is None:
            raise InvalidRequestError(f"input '{name}': its dtype is not supported over REST")
        else:
            array = np.array(value, dtype=numpy_type)
    except (ValueError, TypeError, OverflowError) as err:
        raise InvalidRequestError(
            f"input '{name}': not a rectangular array of {np.dtype(numpy_type).name}: {err}"
        ) from None
    return proto_from_array(array)


def predict_inputs(document: dict[str, Any], input_dtypes: dict[str, int]) -> tuple[dict[str, Any], bool]:
    """The request's TensorProtos by input name, and whether it used the row format."""
    has_instances, has_inputs = "instances" in document, "inputs" in document
    if has_instances == has_inputs:
        raise InvalidRequestError("JSON Value: must have one of 'inputs' or 'instances' keys to exist")
    names = sorted(input_dtypes)
    if has_instances:
        instances = document["instances"]
        if not isinstance(instances, list) or not instances:
            raise InvalidRequestError("Expecting 'instances' to be a non-empty list/array")
        if isinstance(instances[0], dict) and not _is_b64(instances[0]):
            for i, instance in enumerate(instances):
                if not isinstance(instance, dict) or set(instance) != set(names):
                    raise InvalidRequestError(
                        f"Failed to process element: {i} of 'instances' list. "
                        f"keys must be equal to: {','.join(names)}"
                    )
            columns = {n: [instance[n] for instance in instances] for n in names}
        else:
            if len(names) != 1:
                raise InvalidRequestError(f"instances must be JSON objects with the inputs {','.join(names)}")
            columns = {names[0]: instances}
        return {n: tensor_of(v, n, input_dtypes[n]) for n, v in columns.items()}, True
    inputs = document["inputs"]
    if isinstance(inputs, dict) and not _is_b64(inputs):
        missing = sorted(set(names) - set(inputs))
        if missing:
            raise InvalidRequestError(f"Missing named input: {missing[0]} in 'inputs' object.")
        return {n: tensor_of(inputs[n], n, input_dtypes[n]) for n in names}, False
    if len(names) != 1:
        raise InvalidRequestError(f"'inputs' must be a JSON object with the inputs {','.join(names)}")
    return {names[0]: tensor_of(inputs, names[0], input_dtypes[names[0]])}, False


def _json_value(array: np.ndarray, as_b64: bool) -> Any:
    if array.dtype == object or array.dtype.kind in "SU":
        flat = [
            {B64: base64.b64encode(v).decode()}
            if as_b64
            else (v.decode("utf-8", "replace") if isinstance(v, bytes) else v)
            for v in array.reshape(-1)
        ]
        return np.array(flat, dtype=object).reshape(array.shape).tolist()
    if array.dtype == np.float32:  # float32's shortest round-trip text, as TF Serving writes it
        return (
            np.array([float(repr(v)) for v in array.reshape(-1)], dtype=object).reshape(array.shape).tolist()
        )
    return array.tolist()


def predict_response(outputs: dict[str, np.ndarray], row_format: bool) -> dict[str, Any]:
    values = {k: _json_value(v, k.endswith(BYTES_SUFFIX)) for k, v in outputs.items()}
    if not row_format:
        return {"outputs": next(iter(values.values())) if len(values) == 1 else values}
    if len(values) == 1:
        return {"predictions": next(iter(values.values()))}
    rows = {len(v) if isinstance(v, list) else -1 for v in values.values()}
    if len(rows) != 1 or -1 in rows:
        raise InvalidRequestError(
            "Output tensors do not share a batch size; ask for the columnar format ('inputs')"
        )
    count = rows.pop()
    return {"predictions": [{k: v[i] for k, v in values.items()} for i in range(count)]}


def _feature(name: str, value: Any, feature: tf.train.Feature) -> None:
    values = value if isinstance(value, list) else [value]
    if not values:
        return
    if all(isinstance(v, bool) or (isinstance(v, int) and not isinstance(v, bool)) for v in values):
        feature.int64_list.value.extend(int(v) for v in values)
    elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        feature.float_list.value.extend(float(v) for v in values)
    elif all(isinstance(v, str) or _is_b64(v) for v in values):
        feature.bytes_list.value.extend(_bytes_of(v) for v in values)
    else:
        raise InvalidRequestError(f"Feature: {name} has elements of mixed or unexpected JSON types")


def _example(value: Any) -> tf.train.Example:
    if not isinstance(value, dict):
        raise InvalidRequestError(f"Example must be JSON object but got JSON {type(value).__name__}")
    example = tf.train.Example()
    for name, feature_value in value.items():
        _feature(name, feature_value, example.features.feature[name])
    return example


def examples_input(document: dict[str, Any]) -> input_pb2.Input:
    """The `Input` proto of a Classify or Regress request: examples, with a context when given."""
    examples = document.get("examples")
    if not isinstance(examples, list) or not examples:
        raise InvalidRequestError("'examples' must be a non-empty list of JSON objects")
    model_input = input_pb2.Input()
    if "context" in document:
        with_context = model_input.example_list_with_context
        with_context.context.CopyFrom(_example(document["context"]))
        with_context.examples.extend(_example(e) for e in examples)
    else:
        model_input.example_list.examples.extend(_example(e) for e in examples)
    return model_input


def classify_response(result) -> dict[str, Any]:
    return {
        "results": [
            [[c.label, float(repr(np.float32(c.score)))] for c in r.classes] for r in result.classifications
        ]
    }


def regress_response(result) -> dict[str, Any]:
    return {"results": [float(repr(np.float32(r.value))) for r in result.regressions]}


def proto_json(message) -> dict[str, Any]:
    """A proto as TF Serving's REST API prints it: proto field names, every field, int64 as strings."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, including_default_value_fields=True
    )


def array_of(proto) -> np.ndarray:
    """A response TensorProto back as numpy, for the JSON answer (the server wrote it: no limits)."""
    from serving.tensors import array_from_proto

    return array_from_proto(proto, "output", max_batch=2**62, max_bytes=2**62)
