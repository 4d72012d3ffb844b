"""One request must never crash `fmnist serve` nor grow it by more than it costs to read the request.

Issue #20's shapes, sent over real gRPC to a `fmnist serve` subprocess on a
model with the served Fashion-MNIST model's signatures (`pixels_model.py`):
`predict_images` declares [-1, 28, 28] and reshapes to [-1, 784], so
[1, 28, 28*K] and [1, 7000, 7000] became K and 62,500 images (the second
crashed the server at 9.2 GB), with or without values (TensorFlow reads a
tensor without values as zeros, so a 40-byte request was enough); a 1 MB
context merged into 1,000 or 1,100 empty examples grew the server by about
1 GB before any limit applied.

Each request must be refused with INVALID_ARGUMENT (for the shapes, the code
of TensorFlow's `CheckInputSpecs`, tensorflow/core/tfrt/saved_model/saved_model.cc,
which TF Serving runs with `validate_input_specs`,
tfrt_saved_model_source_adapter.proto:166; for the examples, the code of the
example limit, as TF Serving's "Input is empty." in servables/tensorflow/util.cc:167),
and the server's peak RSS
(VmHWM, reset through /proc/<pid>/clear_refs before each request) may grow by
at most 100 MB plus twice the request's size: gRPC holds the received bytes
and the parsed message while the call runs; anything beyond is the server
building what it should have refused.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from core.vocabulary import (
    CLASSIFY_SIGNATURE,
    IMAGE_HEIGHT,
    IMAGE_KEY,
    IMAGE_WIDTH,
    IMAGES_INPUT,
    IMAGES_SIGNATURE,
    MODEL_NAME,
)
from tests.serving import pixels_model, serve_process

ALLOWED_GROWTH_BYTES = 100 * 2**20


def proc_status_bytes(pid: int, field: str) -> int:
    """A `/proc/<pid>/status` memory field (kB there), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def peak_growth(pid: int, call) -> tuple[int, object]:
    """How far the process's peak RSS rose above its RSS while `call()` ran, and what `call` returned."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before = proc_status_bytes(pid, "VmRSS")
    result = call()
    return proc_status_bytes(pid, "VmHWM") - before, result


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """`fmnist serve` as a user starts it, on the stand-in model; gRPC stubs and the process."""
    base = tmp_path_factory.mktemp("models")
    pixels_model.build(str(base / MODEL_NAME / "1"))
    process, channel = serve_process.start(MODEL_NAME, [f"--model_base_path={base}"])
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    stub.Predict(images_request([1, IMAGE_HEIGHT, IMAGE_WIDTH]), timeout=30)  # first call traces the graph
    yield {"process": process, "stub": stub}
    channel.close()
    process.kill()
    process.communicate()


def images_request(shape: list[int], with_values: bool = True) -> predict_pb2.PredictRequest:
    """A Predict on `predict_images` of uint8 zeros shaped `shape`: as raw content, or header only."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL_NAME
    request.model_spec.signature_name = IMAGES_SIGNATURE
    tensor = request.inputs[IMAGES_INPUT]
    tensor.dtype = types_pb2.DT_UINT8
    for size in shape:
        tensor.tensor_shape.dim.add().size = size
    if with_values:
        tensor.tensor_content = np.zeros(shape, np.uint8).tobytes()
    return request


def context_request(examples: int, context_bytes: int) -> classification_pb2.ClassificationRequest:
    """A Classify whose context (one image feature of `context_bytes`) goes into `examples` empty examples."""
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = MODEL_NAME
    request.model_spec.signature_name = CLASSIFY_SIGNATURE
    with_context = request.input.example_list_with_context
    pixels = with_context.context.features.feature[IMAGE_KEY].int64_list.value
    pixels.extend([2**62] * (context_bytes // 9))  # 9 bytes per varint of this size
    for _ in range(examples):
        with_context.examples.add()
    return request


def refused_with(call, request) -> grpc.StatusCode:
    try:
        call(request, timeout=120)
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


CASES = {
    "[1, 28, 28*4096] with values": ("Predict", lambda: images_request([1, 28, 28 * 4096])),
    "[1, 28, 28*4096] header only": ("Predict", lambda: images_request([1, 28, 28 * 4096], False)),
    "[1, 7000, 7000] with values": ("Predict", lambda: images_request([1, 7000, 7000])),
    "[1, 7000, 7000] header only": ("Predict", lambda: images_request([1, 7000, 7000], False)),
    "1 MB context x 1,100 examples": ("Classify", lambda: context_request(1100, 2**20)),
    "1 MB context x 1,000 examples": ("Classify", lambda: context_request(1000, 2**20)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_request_whose_cost_is_out_of_bounds_is_refused_at_no_memory_cost(server, case: str):
    method, build_request = CASES[case]
    request = build_request()
    pid = server["process"].pid
    growth, code = peak_growth(pid, lambda: refused_with(getattr(server["stub"], method), request))
    assert server["process"].poll() is None, "the server died"
    assert code == grpc.StatusCode.INVALID_ARGUMENT, case
    budget = ALLOWED_GROWTH_BYTES + 2 * request.ByteSize()
    assert growth <= budget, f"{case}: peak RSS grew {growth / 2**20:.0f} MB (budget {budget / 2**20:.0f})"


def test_the_server_answers_a_good_request_after_every_refused_one(server):
    response = server["stub"].Predict(images_request([2, IMAGE_HEIGHT, IMAGE_WIDTH]), timeout=30)
    assert [d.size for d in response.outputs["probabilities"].tensor_shape.dim] == [2, 10]
