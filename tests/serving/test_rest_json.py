"""TF Serving's REST JSON rules (`tensorflow_serving/util/json_tensor.cc`), on the converters alone.

Each expected outcome is what TF Serving's source does, cited by function
(tensorflow/serving at 9d981c5c2708d23c5407c7c1e30309e6f9798874):
`AddValueToTensor` (which JSON values each dtype takes), `FillTensorProto`
(shape checks), `AddValueToFeature` (tf.Example features), `ParseJson`
(rapidjson with `kParseIterativeFlag | kParseNanAndInfFlag`), `FillSignature`.
The wire-level cases (HTTP statuses, routing, limits) are in `test_rest_server.py`.
"""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
from tensorflow.core.framework import types_pb2

from serving import rest_json
from serving.servable import InvalidRequestError, ServingStatusError

U8, I32, I64, U32, U64 = (
    types_pb2.DT_UINT8,
    types_pb2.DT_INT32,
    types_pb2.DT_INT64,
    types_pb2.DT_UINT32,
    types_pb2.DT_UINT64,
)
F32, F64, BOOL, STR, HALF = (
    types_pb2.DT_FLOAT,
    types_pb2.DT_DOUBLE,
    types_pb2.DT_BOOL,
    types_pb2.DT_STRING,
    types_pb2.DT_HALF,
)


def predict(body: str, dtype: int = F32, name: str = "x"):
    """Body text -> the TensorProto of input `name` (parsed as the server parses it)."""
    inputs, _ = rest_json.predict_inputs(rest_json.parse_body(body.encode()), {name: dtype})
    return inputs[name]


def values_of(proto) -> list:
    fields = {U8: "int_val", I32: "int_val", I64: "int64_val", U32: "uint32_val", U64: "uint64_val",
              F32: "float_val", F64: "double_val", BOOL: "bool_val", STR: "string_val"}  # fmt: skip
    field = fields[proto.dtype]
    return list(getattr(proto, field))


# AddValueToTensor (json_tensor.cc:290-342): DT_UINT8/INT8/INT16/INT32 need `IsInt()` (an integer
# literal in int32's range); INT64 `IsInt64()`; UINT32 `IsUint()`; UINT64 `IsUint64()`;
# FLOAT/DOUBLE `IsNumber()`; BOOL `IsBool()`; STRING `IsString()` or a b64 object.
REFUSED = [
    (U8, "0.5"), (U8, '"12"'), (U8, "true"), (U8, str(2**40)), (U8, "1.0"), (U8, "1e2"), (U8, "null"),
    (U8, str(2**31)), (I32, str(-(2**31) - 1)), (I64, str(2**63)), (I64, str(2**70)), (U32, "-1"),
    (U32, str(2**32)), (U64, "-1"), (U64, str(2**64)), (F32, '"1.5"'), (F32, "true"), (F32, "null"),
    (BOOL, "1"), (BOOL, '"true"'), (STR, "1"), (STR, "true"), (I64, '{"b64": "AA=="}'),
]  # fmt: skip


@pytest.mark.parametrize(("dtype", "value"), REFUSED)
def test_a_json_value_the_dtype_does_not_take_is_refused_as_add_value_to_tensor_does(dtype, value):
    with pytest.raises(InvalidRequestError, match=r"is not of expected type: \w+"):
        predict(f'{{"instances": [{value}]}}', dtype)


ACCEPTED = [
    (U8, "255", [255]), (U8, "0", [0]), (U8, "-0", [0]), (I32, str(-(2**31)), [-(2**31)]),
    (I64, str(2**63 - 1), [2**63 - 1]), (I64, str(-(2**63)), [-(2**63)]), (U32, str(2**32 - 1), [2**32 - 1]),
    (U64, str(2**64 - 1), [2**64 - 1]), (F32, "1", [1.0]), (F32, "0.5", [0.5]), (F64, str(2**70), [2.0**70]),
    (BOOL, "true", [True]), (STR, '"é"', ["é".encode()]), (STR, '{"b64": "AAE="}', [b"\x00\x01"]),
    (STR, '{"b64": "AAE"}', [b"\x00\x01"]),  # absl::Base64Unescape takes unpadded text
]  # fmt: skip


@pytest.mark.parametrize(("dtype", "value", "expected"), ACCEPTED)
def test_a_json_value_the_dtype_takes_is_read_as_that_value(dtype, value, expected):
    assert values_of(predict(f'{{"instances": [{value}]}}', dtype)) == expected


def test_uint8_takes_any_int32_literal_and_tensorflow_casts_it_as_in_tf_serving():
    """`IsInt()` is TF Serving's only range check for uint8: 300 goes to `int_val` (TensorFlow casts it)."""
    proto = predict('{"instances": [300]}', U8)
    assert values_of(proto) == [300] and proto.dtype == U8


def test_a_float_input_takes_a_number_beyond_float_range_as_infinity_like_static_cast():
    assert values_of(predict('{"instances": [1e300]}', F32)) == [float("inf")]


def test_a_dtype_json_cannot_express_is_unimplemented_as_in_add_value_to_tensor():
    with pytest.raises(ServingStatusError, match="Conversion of JSON Value: 1 to type: half") as caught:
        predict('{"instances": [1]}', HALF)
    assert caught.value.code == "UNIMPLEMENTED"


@pytest.mark.parametrize("value", ["0", "null", "[]", '{"a": 1}'])
def test_a_signature_name_that_is_not_a_string_is_refused_as_fill_signature_does(value):
    document = rest_json.parse_body(f'{{"signature_name": {value}, "instances": [1.0]}}'.encode())
    with pytest.raises(InvalidRequestError, match="'signature_name' key must be a string value"):
        rest_json.signature_name(document)


def test_the_signature_name_defaults_to_empty_when_absent():
    assert rest_json.signature_name({"instances": [1.0]}) == ""


# FillTensorProto (json_tensor.cc:392-436): every list of a level has the first list's size, values
# sit at one level only.
@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"instances": [[1, 2], [3]]}', "unexpected size"),
        ('{"instances": [[1, 2], 3]}', "incorrect level"),
        ('{"instances": [1, [2]]}', "unexpected level"),
        ('{"inputs": [[1], [[2]]]}', "unexpected level"),
    ],
)
def test_a_ragged_tensor_is_refused_as_fill_tensor_proto_does(body: str, message: str):
    with pytest.raises(InvalidRequestError, match=message):
        predict(body)


def test_a_tensor_nested_deeper_than_tensorflows_largest_rank_is_refused_naming_the_input():
    body = '{"instances": ' + "[" * 900 + "1" + "]" * 900 + "}"
    with pytest.raises(InvalidRequestError, match="'?x'?.*254"):
        predict(body)
    with pytest.raises(InvalidRequestError, match="'?x'?.*254"):
        predict(body, STR)


def test_a_body_nested_deeper_than_the_parser_goes_is_a_parse_error():
    with pytest.raises(InvalidRequestError, match="JSON Parse error"):
        rest_json.parse_body(b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")


def test_an_empty_dimension_gives_an_empty_tensor_of_that_shape():
    proto = predict('{"inputs": [[], []]}', U8)
    assert [d.size for d in proto.tensor_shape.dim] == [2, 0] and values_of(proto) == []


# ParseJson (json_tensor.cc:473-502): rapidjson refuses a lone surrogate escape
# (kParseErrorStringUnicodeSurrogateInvalid), takes NaN/Infinity (kParseNanAndInfFlag) and a BOM.
@pytest.mark.parametrize("text", [r'"\ud800"', r'"\udc00"', r'"a\ud83dz"', r'"\ud83d\ud83d"'])
def test_a_lone_surrogate_anywhere_is_a_parse_error(text: str):
    for body in (f'{{"instances": [{text}]}}', f'{{"other": {{"k": [{text}]}}}}', f"{{{text}: 1}}"):
        with pytest.raises(InvalidRequestError, match="JSON Parse error: The surrogate pair"):
            rest_json.parse_body(body.encode())


def test_a_surrogate_pair_is_one_character():
    assert values_of(predict(r'{"instances": ["\ud83d\ude00"]}', STR)) == ["😀".encode()]


def test_nan_infinity_and_a_byte_order_mark_are_read_as_rapidjson_reads_them():
    proto = predict('\ufeff{"instances": [NaN, Infinity, -Infinity]}')
    assert np.isnan(proto.float_val[0]) and list(proto.float_val[1:]) == [float("inf"), float("-inf")]


@pytest.mark.parametrize(
    "body", [b"", b"   ", b"{", b"[1]", b'"x"', b"\xff\xfe{}", b'{"a": 1e999}', b'{"a": ' + b"9" * 400 + b"}"]
)
def test_malformed_bodies_are_invalid_argument_parse_errors(body: bytes):
    with pytest.raises(InvalidRequestError, match="JSON (Parse error|Value)"):
        rest_json.parse_body(body)


def test_an_error_quotes_at_most_256_characters_of_the_value_without_encoding_all_of_it():
    document = {"instances": list(range(5_000_000)), "inputs": 1}
    tracemalloc.start()
    try:
        with pytest.raises(InvalidRequestError) as caught:
            rest_json.predict_inputs(document, {"x": F32})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(str(caught.value)) < 400
    assert peak < 1_000_000  # bytes: the 5-million-element list is not turned into text


# AddValueToFeature (json_tensor.cc:737-794): a feature takes the kind of its first value;
# integers and booleans are int64, doubles float (an integer beyond uint64 is a double in
# rapidjson), strings bytes; uint64 values are refused.
def example_of(body: str):
    model_input = rest_json.examples_input(rest_json.parse_body(body.encode()))
    return model_input.example_list.examples[0].features.feature


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[1, 2.5]", "Unexpected element type in feature: x expecting type: int64"),
        ("[2.5, 1]", "Unexpected element type in feature: x expecting type: float"),
        ('[1, "a"]', "Unexpected element type in feature: x expecting type: int64"),
        ("[true, 1.5]", "Unexpected element type in feature: x expecting type: int64"),
        (str(2**64 - 1), "Feature: x has uint64_t element. Only int64_t is supported."),
        (f"[1, {2**63}]", "Feature: x has uint64_t element"),
        ("null", "Feature: x has element with unexpected JSON type: Null"),
        ("[[1]]", "Feature: x has element with unexpected JSON type: Array"),
        ('{"a": 1}', "Feature: x has element with unexpected JSON type: Object"),
    ],
)
def test_a_feature_value_tf_serving_refuses_is_invalid_argument_naming_the_feature(value: str, message: str):
    with pytest.raises(InvalidRequestError, match=message.replace(".", r"\.")):
        example_of(f'{{"examples": [{{"x": {value}}}]}}')


def test_feature_values_are_read_as_add_value_to_feature_reads_them():
    features = example_of(
        f'{{"examples": [{{"i": [1, {2**63 - 1}, -{2**63}], "b": [true, false], "f": [0.5, 2.0], '
        f'"big": {2**70}, "s": ["a", {{"b64": "AAE="}}], "e": []}}]}}'
    )
    assert list(features["i"].int64_list.value) == [1, 2**63 - 1, -(2**63)]
    assert list(features["b"].int64_list.value) == [1, 0]
    assert list(features["f"].float_list.value) == [0.5, 2.0]
    assert list(features["big"].float_list.value) == [np.float32(2.0**70)]  # a double, so a float feature
    assert list(features["s"].bytes_list.value) == [b"a", b"\x00\x01"]
    assert features["e"].WhichOneof("kind") is None  # present, of no kind, as TF Serving leaves it


def test_examples_must_be_a_non_empty_list_of_objects():
    for body, message in (
        ("{}", "key 'examples' is expected"),
        ('{"examples": 1}', "Expecting 'examples' value to be an list/array"),
        ('{"examples": []}', "'examples' value is an empty array"),
        ('{"examples": [1]}', "Example must be JSON object but got JSON Number"),
        ('{"context": [], "examples": [{}]}', "Example must be JSON object but got JSON Array"),
    ):
        with pytest.raises(InvalidRequestError, match=message):
            rest_json.examples_input(json.loads(body))


# The cost bound (checked before parsing): it must be an upper bound of what parsing builds.
@pytest.mark.parametrize(
    "body",
    [
        b'{"instances": [' + b",".join([b"0"] * 200_000) + b"]}",
        b'{"instances": [' + b",".join([b"123456"] * 100_000) + b"]}",
        b'{"instances": [' + b",".join([b"0.5"] * 100_000) + b"]}",
        b'{"instances": [' + b",".join([b"[0]"] * 100_000) + b"]}",
        b'{"instances": [' + b",".join([b'{"a":1}'] * 50_000) + b"]}",
        b'{"instances": [' + b",".join([b'"ab"'] * 100_000) + b"]}",
        b'{"instances": ["' + b"x" * 1_000_000 + b'"]}',
    ],
    ids=["zeros", "ints", "floats", "lists", "objects", "strings", "one-string"],
)
def test_parse_cost_is_an_upper_bound_of_what_parsing_allocates(body: bytes):
    tracemalloc.start()
    try:
        rest_json.parse_body(body)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= rest_json.parse_cost(body) <= 40 * max(peak, len(body))
