"""TF Serving's REST JSON formats (`tensorflow_serving/util/json_tensor.cc`), both ways, with its type rules.

- Predict: `{"signature_name": ..., "instances": [...]}` (row format: one
  element per example; an object per example when the signature has several
  inputs) or `{"inputs": ...}` (columnar: the tensor, or an object of named
  tensors); a string value is UTF-8 bytes, `{"b64": "..."}` is base64 bytes.
  The answer is `{"predictions": [...]}` (row) or `{"outputs": ...}`
  (columnar); string outputs whose name ends in `_bytes` come back as
  `{"b64": ...}`.
- Classify and Regress: `{"signature_name": ..., "context": {...},
  "examples": [{feature: value}]}`; answered with
  `{"results": [[[label, score], ...], ...]}` and `{"results": [value, ...]}`.
- Errors: `{"error": "..."}`.

A JSON value is read as TF Serving's rapidjson reads it (`ParseJson`): a
number with a fraction or an exponent, or an integer outside [-2^63, 2^64),
is a double; other integers are integers; a lone UTF-16 surrogate escape is a
parse error. Which values each input dtype takes is `AddValueToTensor`'s rule:
float/double any number; int8/int16/int32/uint8 an integer in int32's range
(TensorFlow then casts it, as TF Serving does); int64, uint32, uint64 an
integer in that type's range; bool only true/false; string a string or
`{"b64": ...}`; other dtypes are UNIMPLEMENTED. A tf.Example feature takes
the kind of its first value (`AddValueToFeature`): integers and booleans
int64, doubles float, strings bytes; a later value of another kind, or an
integer in (2^63, 2^64), is refused.

Reading a body never costs more than `parse_cost` says (checked first, from
byte counts), and the parser gives other threads their turn while it runs.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import sys
from itertools import chain
from typing import Any

import numpy as np
from google.protobuf import json_format
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import input_pb2

from serving.servable import InvalidRequestError, ServingStatusError
from serving.tensors import array_from_proto

B64, BYTES_SUFFIX = "b64", "_bytes"
MAX_RANK = 254  # TensorFlow's TensorShape::MaxDimensions(): a deeper tensor cannot be built
DEBUG_CHARS = 256  # json_tensor.cc's kMaxJsonDebugStringBytes: how much of a value an error quotes
INT64_MIN, INT64_MAX, UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1

# Integer dtypes: the range rapidjson's IsInt/IsInt64/IsUint/IsUint64 accept, and the TensorProto field.
_INTEGER_DTYPES = {
    types_pb2.DT_INT32: (-(2**31), 2**31 - 1, "int_val"),
    types_pb2.DT_INT16: (-(2**31), 2**31 - 1, "int_val"),
    types_pb2.DT_INT8: (-(2**31), 2**31 - 1, "int_val"),
    types_pb2.DT_UINT8: (-(2**31), 2**31 - 1, "int_val"),
    types_pb2.DT_INT64: (INT64_MIN, INT64_MAX, "int64_val"),
    types_pb2.DT_UINT32: (0, 2**32 - 1, "uint32_val"),
    types_pb2.DT_UINT64: (0, UINT64_MAX, "uint64_val"),
}
_FLOAT_DTYPES = {
    types_pb2.DT_FLOAT: (np.float32, "float_val"),
    types_pb2.DT_DOUBLE: (np.float64, "double_val"),
}

# A `\uD800`..`\uDFFF` escape in the raw body: only then can the parsed text hold a lone surrogate.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")
# Bytes of Python objects one parsed JSON value, list or object may take (a pointer and the object;
# a list's header; a small dict), for `parse_cost`.
VALUE_BYTES, LIST_BYTES, OBJECT_BYTES = 64, 64, 256


class BodyTooLargeError(ServingStatusError):
    """A body larger, or costlier to parse, than the server takes: HTTP 413 over REST."""

    code = "RESOURCE_EXHAUSTED"


class UnimplementedError(ServingStatusError):
    code = "UNIMPLEMENTED"


# --- reading the body --------------------------------------------------------------------------------
def values_bound(body: bytes) -> int:
    """At most how many JSON values `body` holds: each follows a comma or opens its list or object."""
    return body.count(b",") + body.count(b"[") + body.count(b"{") + 1


def parse_cost(body: bytes) -> int:
    """An upper bound of the bytes `parse_body` builds for `body`, from byte counts (no parsing).

    `values_bound` bounds the values; brackets and braces bound the lists and
    objects (counted inside strings too, which only overestimates). The text
    itself is held three times: the body, its decoded text and the strings in it.
    """
    lists, objects = body.count(b"["), body.count(b"{")
    return 3 * len(body) + VALUE_BYTES * values_bound(body) + LIST_BYTES * lists + OBJECT_BYTES * objects


def _integer(text: str) -> int | float:
    """A JSON integer as rapidjson keeps it: outside [-2^63, 2^64) it is a double (or too big for one).

    Being a Python function, it also lets the interpreter switch threads while a
    large body is parsed (the C parser alone would hold the GIL throughout).
    """
    value = int(text)
    if INT64_MIN <= value <= UINT64_MAX:
        return value
    if abs(value) > sys.float_info.max:
        raise ValueError("Number too big to be stored in double.")
    return float(value)


def _double(text: str) -> float:
    """A JSON number with a fraction or exponent; rapidjson refuses one beyond a double's range."""
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("Number too big to be stored in double.")
    return value


def parse_body(body: bytes) -> dict[str, Any]:
    """The request's JSON object, parsed as TF Serving's `ParseJson` does (errors are INVALID_ARGUMENT)."""
    if not body:
        raise InvalidRequestError("JSON Parse error: The document is empty")
    try:
        text = body.decode("utf-8-sig")  # rapidjson's UTF8 input stream skips a byte-order mark
    except UnicodeDecodeError as err:
        raise InvalidRequestError(
            f"JSON Parse error: Invalid encoding in string. at offset: {err.start}"
        ) from None
    try:
        document = json.loads(text, parse_int=_integer, parse_float=_double)
    except json.JSONDecodeError as err:
        raise InvalidRequestError(f"JSON Parse error: {err.msg} at offset: {err.pos}") from None
    except RecursionError:
        raise InvalidRequestError("JSON Parse error: the document is nested too deeply") from None
    except ValueError as err:  # from the number hooks, or an integer of more than 4300 digits
        raise InvalidRequestError(f"JSON Parse error: {err}") from None
    if _SURROGATE_ESCAPE.search(body) and _has_lone_surrogate(document):
        raise InvalidRequestError("JSON Parse error: The surrogate pair in string is invalid.")
    if not isinstance(document, dict):
        raise InvalidRequestError(f"JSON Value: {debug_string(document)} Is not object")
    return document


def _has_lone_surrogate(document: Any) -> bool:
    """Whether any string or key holds half a surrogate pair (Python's parser joins only whole pairs)."""
    pending = [document]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return True
        elif isinstance(value, list):
            pending.extend(value)
        elif isinstance(value, dict):
            pending.extend(value)
            pending.extend(value.values())
    return False


def debug_string(value: Any) -> str:
    """`JsonValueToDebugString`: the value as JSON, cut at 256 characters without encoding the rest."""
    pieces, size = [], 0
    try:
        for piece in json.JSONEncoder(ensure_ascii=False).iterencode(value):
            pieces.append(piece)
            size += len(piece)
            if size >= DEBUG_CHARS:
                break
    except RecursionError:
        pass
    return "".join(pieces)[:DEBUG_CHARS]


def json_type(value: Any) -> str:
    """`JsonTypeString`: rapidjson's name of a value's type."""
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    return {dict: "Object", list: "Array", str: "String"}.get(type(value), "Number")


def dtype_name(dtype: int) -> str:
    """TensorFlow's `DataTypeString` (`uint8`, `float`, `string`)."""
    return types_pb2.DataType.Name(dtype)[3:].lower() if dtype in types_pb2.DataType.values() else str(dtype)


def signature_name(document: dict[str, Any]) -> str:
    """`FillSignature`: the optional `signature_name`, which must be a string."""
    name = document.get("signature_name", "")
    if not isinstance(name, str):
        raise InvalidRequestError(
            f"JSON Value: {debug_string(document)} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    return name


# --- Predict: JSON values to TensorProtos ------------------------------------------------------------
def _is_b64(value: Any) -> bool:
    """`IsValBase64Object`: an object whose only key is "b64", holding a string."""
    return type(value) is dict and len(value) == 1 and isinstance(value.get(B64), str)


def _b64_bytes(value: Any) -> bytes:
    """`JsonDecodeBase64Object`: the bytes of `{"b64": ...}` (padding optional, as absl's decoder)."""
    if not _is_b64(value):
        raise InvalidRequestError(
            f"JSON Value: {debug_string(value)} not formatted correctly for base64 data"
        )
    text = value[B64].strip()
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestError("Unable to base64 decode") from None


def dense_shape(value: Any, name: str) -> list[int]:
    """`GetDenseTensorShape`: the dimensions along the first elements; refuses what TensorFlow cannot hold."""
    dims = []
    while type(value) is list:
        dims.append(len(value))
        if len(dims) > MAX_RANK:
            raise InvalidRequestError(
                f"tensor parsing error: {name}: the JSON value is nested more than {MAX_RANK} deep "
                f"(TensorFlow's largest rank)"
            )
        if not value:
            break
        value = value[0]
    return dims


def _leaves(value: Any, dims: list[int]) -> tuple[list[Any], set[type]]:
    """`FillTensorProto`'s structure checks, level by level; the values at the leaves and their types.

    Every list of a level must have that level's size, and no leaf may be a list
    (C-speed set/map passes; an offender is looked for only once there is one).
    """
    level = [value]
    for depth, size in enumerate(dims):
        if set(map(type, level)) != {list} or set(map(len, level)) != {size}:
            _refuse_level(level, depth, size, len(dims))
        level = list(chain.from_iterable(level))
    types = set(map(type, level))
    if list in types:
        raise InvalidRequestError(f"Encountered list at unexpected level: {len(dims)} expected < {len(dims)}")
    return level, types


def _refuse_level(level: list[Any], depth: int, size: int, rank: int) -> None:
    for item in level:
        if type(item) is not list:
            raise InvalidRequestError(
                f"JSON Value: {debug_string(item)} found at incorrect level: {depth + 1} in the JSON DOM. "
                f"Expected at level: {rank}"
            )
        if len(item) != size:
            raise InvalidRequestError(
                f"Encountered list at unexpected size: {len(item)} at level: {depth} expected size: {size}"
            )


def _type_error(value: Any, dtype: int) -> InvalidRequestError:
    """`TypeError`: the first value that the dtype does not take."""
    expected = dtype_name(dtype)
    return InvalidRequestError(
        f"JSON Value: {debug_string(value)} Type: {json_type(value)} is not of expected type: {expected}"
    )


def _first(values: list[Any], bad) -> Any:
    return next(v for v in values if bad(v))


def _fill_numbers(proto: tensor_pb2.TensorProto, leaves: list[Any], types: set[type]) -> None:
    """`AddValueToTensor` for numeric and bool dtypes: each value must be of the dtype's kind and range."""
    dtype = proto.dtype
    if dtype in _FLOAT_DTYPES:
        if not types <= {int, float}:
            raise _type_error(_first(leaves, lambda v: type(v) not in (int, float)), dtype)
        numpy_type, field = _FLOAT_DTYPES[dtype]
        with np.errstate(over="ignore"):  # a double beyond float's range becomes inf, as static_cast does
            getattr(proto, field).extend(np.array(leaves, dtype=np.float64).astype(numpy_type).tolist())
    elif dtype in _INTEGER_DTYPES:
        low, high, field = _INTEGER_DTYPES[dtype]
        if types != {int} or min(leaves) < low or max(leaves) > high:
            raise _type_error(_first(leaves, lambda v: type(v) is not int or not low <= v <= high), dtype)
        getattr(proto, field).extend(leaves)
    elif dtype == types_pb2.DT_BOOL:
        if types != {bool}:
            raise _type_error(_first(leaves, lambda v: type(v) is not bool), dtype)
        proto.bool_val.extend(leaves)
    elif type(leaves[0]) is dict:  # FillTensorProto refuses an object before trying the dtype
        raise _type_error(leaves[0], dtype)
    else:
        raise UnimplementedError(
            f"Conversion of JSON Value: {debug_string(leaves[0])} to type: {dtype_name(dtype)}"
        )


def _fill_strings(proto: tensor_pb2.TensorProto, leaves: list[Any]) -> None:
    """`AddValueToTensor` for DT_STRING: strings as UTF-8, `{"b64": ...}` objects decoded."""
    for value in leaves:
        if type(value) is str:
            proto.string_val.append(value.encode())
        elif type(value) is dict:
            proto.string_val.append(_b64_bytes(value))
        else:
            raise _type_error(value, types_pb2.DT_STRING)


def tensor_of(value: Any, name: str, dtype: int) -> tensor_pb2.TensorProto:
    """The TensorProto TF Serving builds for JSON `value` as input `name` of `dtype` (`FillTensorProto`)."""
    dims = dense_shape(value, name)
    leaves, types = _leaves(value, dims)
    proto = tensor_pb2.TensorProto(
        dtype=dtype,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims]
        ),
    )
    if not leaves:
        return proto
    if dtype == types_pb2.DT_STRING:
        _fill_strings(proto, leaves)
    else:
        _fill_numbers(proto, leaves, types)
    return proto


def _row_columns(instances: list[Any], names: list[str]) -> dict[str, list[Any]]:
    """`FillTensorMapFromInstancesList`: the rows' values by input; every row an object, or none."""
    objects = type(instances[0]) is dict and not _is_b64(instances[0])
    if not objects:
        if len(names) > 1:
            raise InvalidRequestError(
                "instances is a plain list, but expecting list of objects as multiple input tensors "
                "required as per tensorinfo_map"
            )
        for i, row in enumerate(instances):
            if type(row) is dict and not _is_b64(row):
                raise InvalidRequestError(f"Expecting value/list but got object at item {i} of input list")
        return {names[0]: instances}
    for i, row in enumerate(instances):
        if type(row) is not dict or _is_b64(row):
            raise InvalidRequestError(f"Expecting object but got list at item {i} of input list")
        unknown = sorted(set(row) - set(names))
        if unknown:
            raise InvalidRequestError(
                f"Failed to process element: {i} key: {unknown[0]} of 'instances' list. "
                f"Error: JSON object: does not have named input: {unknown[0]}"
            )
        if len(row) != len(names):
            raise InvalidRequestError(
                f"Failed to process element: {i} of 'instances' list. JSON object: {debug_string(row)} "
                f"keys must be equal to: {','.join(names)}"
            )
    return {n: [row[n] for row in instances] for n in names}


def predict_inputs(document: dict[str, Any], input_dtypes: dict[str, int]) -> tuple[dict[str, Any], bool]:
    """`FillPredictRequestFromJson`: the request's TensorProtos by input name, and whether rows were used."""
    if not input_dtypes:
        raise InvalidRequestError(
            f"Failed to get input map for signature: {document.get('signature_name') or 'DEFAULT'}"
        )
    names = sorted(input_dtypes)
    if "instances" in document:
        if "inputs" in document:
            raise InvalidRequestError(
                f"JSON Value: {debug_string(document)} Not formatted correctly expecting only one of "
                "'inputs' or 'instances' keys to exist "
            )
        instances = document["instances"]
        if type(instances) is not list:
            raise InvalidRequestError(
                f"JSON Value: {debug_string(document)} Expecting 'instances' to be an list/array"
            )
        if not instances:
            raise InvalidRequestError(f"JSON Value: {debug_string(document)} No values in 'instances' array")
        columns = _row_columns(instances, names)
        return {n: tensor_of(v, n, input_dtypes[n]) for n, v in columns.items()}, True
    if "inputs" not in document:
        raise InvalidRequestError("Missing 'inputs' or 'instances' key")
    inputs = document["inputs"]
    if type(inputs) is not dict or _is_b64(inputs):
        if len(names) > 1:
            raise InvalidRequestError(
                "inputs is a plain value/list, but expecting an object as multiple input tensors "
                "required as per tensorinfo_map"
            )
        return {names[0]: tensor_of(inputs, names[0], input_dtypes[names[0]])}, False
    for n in names:
        if n not in inputs:
            raise InvalidRequestError(f"Missing named input: {n} in 'inputs' object.")
    return {n: tensor_of(inputs[n], n, input_dtypes[n]) for n in names}, False


# --- Classify and Regress: JSON objects to tf.Examples -----------------------------------------------
_KIND_NAMES = {"int64_list": "int64", "float_list": "float", "bytes_list": "bytes"}


def _feature_kind(name: str, value: Any) -> str:
    """`AddValueToFeature`: which list of a Feature one JSON value goes to."""
    if type(value) is bool:
        return "int64_list"
    if type(value) is int:
        if value > INT64_MAX:
            raise InvalidRequestError(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
        return "int64_list"
    if type(value) is float:
        return "float_list"
    if type(value) is str or _is_b64(value):
        return "bytes_list"
    raise InvalidRequestError(f"Feature: {name} has element with unexpected JSON type: {json_type(value)}")


def _feature(name: str, values: list[Any]) -> feature_pb2.Feature:
    """One feature: every value must be of the first value's kind (homogeneous lists take a fast path)."""
    feature = feature_pb2.Feature()
    if not values:
        return feature  # an empty list is a feature of no kind, as in TF Serving
    kind, types = _feature_kind(name, values[0]), set(map(type, values))
    if kind == "int64_list" and types <= {int, bool} and max(values) <= INT64_MAX:
        feature.int64_list.value.extend(values)
    elif kind == "float_list" and types == {float}:
        feature.float_list.value.extend(values)
    else:
        for value in values:
            if _feature_kind(name, value) != kind:
                raise InvalidRequestError(
                    f"Unexpected element type in feature: {name} expecting type: {_KIND_NAMES[kind]}"
                )
        if kind == "bytes_list":
            feature.bytes_list.value.extend(v.encode() if type(v) is str else _b64_bytes(v) for v in values)
        else:
            getattr(feature, kind).value.extend(values)
    return feature


def _example(value: Any) -> example_pb2.Example:
    """`MakeExampleFromJsonObject`: a feature per key, from a value or a list of values."""
    if type(value) is not dict:
        raise InvalidRequestError(f"Example must be JSON object but got JSON {json_type(value)}")
    example = example_pb2.Example()
    for name, content in value.items():
        values = content if type(content) is list else [content]
        example.features.feature[name].CopyFrom(_feature(name, values))
    return example


def examples_input(document: dict[str, Any]) -> input_pb2.Input:
    """`FillClassifyRegressRequestFromJson`: the `Input` proto, examples with a context when given."""
    model_input = input_pb2.Input()
    has_context = "context" in document
    if has_context:
        model_input.example_list_with_context.context.CopyFrom(_example(document["context"]))
    examples = document.get("examples")
    if "examples" not in document:
        raise InvalidRequestError(
            f"JSON Value: {debug_string(document)} When method is classify, key 'examples' is expected "
            "and was not found"
        )
    if type(examples) is not list:
        raise InvalidRequestError(
            f"JSON Value: {debug_string(document)} Expecting 'examples' value to be an list/array"
        )
    if not examples:
        raise InvalidRequestError(f"JSON Value: {debug_string(document)} 'examples' value is an empty array")
    target = model_input.example_list_with_context if has_context else model_input.example_list
    target.examples.extend(_example(e) for e in examples)
    return model_input


# --- answers ------------------------------------------------------------------------------------------
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
    return array_from_proto(proto, "output", max_batch=2**62, max_bytes=2**62)
