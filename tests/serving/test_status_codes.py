"""Bad requests get TF Serving's status codes (and HTTP statuses over REST), one-line messages, and no harm.

The expected codes are TF Serving's: `predict_util.cc` (unknown signature
FAILED_PRECONDITION, duplicate or unknown `output_filter` alias
INVALID_ARGUMENT), `classifier.cc` (unknown signature INVALID_ARGUMENT),
`http_server.cc` (INVALID_ARGUMENT and FAILED_PRECONDITION -> 400,
NOT_FOUND -> 404). The model is TF Serving's half_plus_two.
"""

from __future__ import annotations

import json
import resource
import shutil
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import classification_pb2, predict_pb2, prediction_service_pb2_grpc

from core.config import ServingConfig
from core.errors import InputError
from serving.server import start
from tests.serving import half_plus_two

MODEL = "default"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("models")
    half_plus_two.build(str(base / MODEL / "1"))
    running = start(ServingConfig(model_base_path=str(base), port=0, rest_api_port=0), rest_port=0)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    yield {
        "running": running,
        "base": base,
        "stub": prediction_service_pb2_grpc.PredictionServiceStub(channel),
        "rest": f"http://127.0.0.1:{running.rest_port}",
    }
    channel.close()
    running.stop()


def predict_request(signature: str = "serving_default", model: str = MODEL) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([[2.0]], dtype=tf.float32))
    return request


def refused(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=10)
    return caught.value


def post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_an_unknown_model_is_not_found_without_showing_the_servers_directory(server):
    error = refused(server["stub"].Predict, predict_request(model="nope"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert str(server["base"]) not in error.details()
    status, body = post(f"{server['rest']}/v1/models/nope:predict", b'{"instances": [1.0]}')
    assert status == 404 and "nope" in body["error"]


def test_an_unknown_predict_signature_is_failed_precondition_as_in_predict_util(server):
    error = refused(server["stub"].Predict, predict_request(signature="nope"))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == 'Serving signature key "nope" not found.'


def test_an_unknown_classify_signature_is_invalid_argument_as_in_classifier(server):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = "nope"
    request.input.example_list.examples.add().features.feature["x"].float_list.value.append(2.0)
    error = refused(server["stub"].Classify, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "No signature was found with the name: nope"


def test_a_duplicate_or_unknown_output_filter_is_invalid_argument(server):
    duplicate = predict_request()
    duplicate.output_filter.extend(["y", "y"])
    assert refused(server["stub"].Predict, duplicate).code() == grpc.StatusCode.INVALID_ARGUMENT
    unknown = predict_request()
    unknown.output_filter.append("z")
    assert refused(server["stub"].Predict, unknown).code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("dtype", [26, 27, 28, 200, 9999])
def test_a_dtype_tensorflow_does_not_have_is_invalid_argument_naming_the_input(server, dtype: int):
    request = predict_request()
    request.inputs["x"].dtype = dtype
    error = refused(server["stub"].Predict, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'x'" in error.details()


@pytest.mark.parametrize("rows", [1_500_000, 10**9, 2**62])
def test_a_huge_shape_is_refused_from_its_header_before_anything_is_allocated(server, rows: int):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.inputs["x"].dtype = types_pb2.DT_FLOAT
    for size in (rows, 28, 28):
        request.inputs["x"].tensor_shape.dim.add().size = size
    request.inputs["x"].float_val.append(1.0)  # a 60-byte request claiming gigabytes
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    error = refused(server["stub"].Predict, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'x'" in error.details() and "limit" in error.details()
    assert time.perf_counter() - started < 2.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50 * 1024  # KiB: < 50 MB grown


def x_request(shape: list[int], values: list[float]) -> predict_pb2.PredictRequest:
    """half_plus_two's Predict with x (declared [-1, 1]) shaped `shape`."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.inputs["x"].dtype = types_pb2.DT_FLOAT
    for size in shape:
        request.inputs["x"].tensor_shape.dim.add().size = size
    request.inputs["x"].float_val.extend(values)
    return request


@pytest.mark.parametrize(
    "shape, values",
    [([1, 4096], [2.0]), ([1, 4096], [2.0] * 4096), ([16, 2], []), ([1, 1, 1], [2.0]), ([], [2.0])],
)
def test_an_input_shaped_unlike_its_signature_is_invalid_argument_before_any_value_is_read(
    server, monkeypatch, shape: list[int], values: list[float]
):
    """Issue #20, item 1: [1, 4096] passed the example limit as one example and the model made 4,096.

    The rule and message are TensorFlow's `CheckInputSpecs` (tensorflow/core/tfrt/saved_model/
    saved_model.cc: INVALID_ARGUMENT "... input shape is wrong, expected : [?,1], actual: [1,4096]"),
    which TF Serving applies with `validate_input_specs` (tfrt_saved_model_source_adapter.proto:166).
    """
    from serving import servable

    def no_values(*_):
        raise AssertionError("the tensor's values were read before its shape was checked")

    monkeypatch.setattr(servable, "values_of", no_values)
    error = refused(server["stub"].Predict, x_request(shape, values))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "signature serving_default input 'x' shape is wrong, expected : [?,1]" in error.details()


def test_rest_gets_the_same_shape_check_as_http_400(server):
    """The check is in the runtime both front ends share; INVALID_ARGUMENT is 400 (http_server.cc:56-57)."""
    status, body = post(f"{server['rest']}/v1/models/{MODEL}:predict", b'{"instances": [[2.0, 2.0, 2.0]]}')
    assert status == 400
    assert "input 'x' shape is wrong, expected : [?,1], actual: [1,3]" in body["error"]


@pytest.mark.parametrize("shape", [[1, 1], [3, 1], [3]])
def test_shapes_that_fit_the_signature_are_answered(server, shape: list[int]):
    """[3] for [-1, 1] leaves out a trailing 1, as TF Serving's own test sends x (`VerifyPredictRequest`)."""
    response = server["stub"].Predict(x_request(shape, [2.0]), timeout=10)
    assert list(response.outputs["y"].float_val) == [3.0] * shape[0]


def context_classify(examples: int, context_floats: int) -> classification_pb2.ClassificationRequest:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = "classify_x_to_y"
    with_context = request.input.example_list_with_context
    with_context.context.features.feature["x"].float_list.value.extend([2.0] * context_floats)
    for _ in range(examples):
        with_context.examples.add()
    return request


@pytest.mark.parametrize(
    "examples, context_floats, message",
    [(1025, 1, "holds 1025 examples; the limit is 1024"), (1000, 2**15, "bytes once merged; the limit is")],
)
def test_context_examples_are_counted_and_their_merged_size_bounded_before_merging(
    server, monkeypatch, examples: int, context_floats: int, message: str
):
    """Issue #20, item 2: a context merged into every example grew the server 1.1 GB before the refusal.

    INVALID_ARGUMENT, the code TF Serving gives an input it cannot take ("Input is empty.",
    servables/tensorflow/util.cc:167); TF Serving merges with no limit (util.cc:184-198).
    """
    from serving import runtime

    def no_merging(*_):
        raise AssertionError("examples were merged before they were counted")

    monkeypatch.setattr(runtime, "merged_example", no_merging)
    error = refused(server["stub"].Classify, context_classify(examples, context_floats))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.details()


def test_context_features_go_into_every_example_within_the_limits(server):
    request = context_classify(3, 1)
    request.input.example_list_with_context.examples[1].features.feature["x"].float_list.value.append(4.0)
    response = server["stub"].Classify(request, timeout=10)
    assert [c.classes[0].score for c in response.result.classifications] == [3.0, 4.0, 3.0]


def corrupted_examples() -> list[bytes]:
    """1- to 6-byte mutations of a valid example, many of them not UTF-8 (the adversarial pass's kind)."""
    example = tf.train.Example()
    example.features.feature["x"].float_list.value.append(2.0)
    valid = bytearray(example.SerializeToString())
    corrupted = []
    for first in range(len(valid)):
        for width in (1, 3, 6):
            mutated = bytearray(valid)
            mutated[first : first + width] = bytes((b ^ 0xA5) for b in mutated[first : first + width])
            corrupted.append(bytes(mutated))
    return corrupted


def test_corrupted_examples_are_answered_or_invalid_argument_never_unknown(server):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = "classify_x_to_y"
    codes = {}
    for serialized in corrupted_examples():
        try:  # raw bytes through Predict on the classify signature, as a broken serializer would send
            request.inputs["inputs"].CopyFrom(tf.make_tensor_proto([serialized], dtype=tf.string))
            server["stub"].Predict(request, timeout=10)
            code = grpc.StatusCode.OK
        except grpc.RpcError as err:
            code = err.code()
            details = err.details()
            assert "\n" not in details and "Graph execution error" not in details, details
            assert "Binding inputs" not in details and "{{node" not in details, details
        codes[code] = codes.get(code, 0) + 1
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT}, codes
    assert codes.get(grpc.StatusCode.INVALID_ARGUMENT, 0) > 0


def test_malformed_rest_bodies_are_http_400_with_an_error(server):
    url = f"{server['rest']}/v1/models/{MODEL}:predict"
    for body in (b"{not json", b"[1, 2]", b'{"instances": []}', b'{"instances": [1], "inputs": [1]}',
                 b'{"instances": ["a"]}', b"\xff\xfe"):  # fmt: skip
        status, answer = post(url, body)
        assert status == 400 and answer["error"], body


def test_unknown_rest_paths_are_404_with_an_error(server):
    status, answer = post(f"{server['rest']}/v2/models/{MODEL}:predict", b"{}")
    assert status == 404 and "Malformed request" in answer["error"]


def test_the_server_still_answers_after_every_bad_request(server):
    result = server["stub"].Predict(predict_request(), timeout=10)
    assert list(result.outputs["y"].float_val) == [3.0]


def test_a_busy_grpc_or_rest_port_is_refused_naming_the_flag(server, tmp_path: Path):
    base = tmp_path / "models"
    shutil.copytree(server["base"], base)
    busy_grpc = ServingConfig(model_base_path=str(base), port=server["running"].port, rest_api_port=0)
    with pytest.raises(InputError, match="--port"):
        start(busy_grpc)
    busy_rest = ServingConfig(model_base_path=str(base), port=0, rest_api_port=server["running"].rest_port)
    with pytest.raises(InputError, match="--rest-api-port"):
        start(busy_rest)
