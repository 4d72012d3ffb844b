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
