"""No model work for a call nobody waits for: its deadline passed, or its client cancelled it.

Issue #20, item 10: 20 calls whose 10 ms deadline passed before their model
call started (the server's CPU was busy) still ran, used 8.5 s of server CPU
and delayed the next good call by 3.2 s. Here each call spends 0.3 s before
its model call (`resolve` is slowed, as a busy CPU or a large request's
parsing would), longer than the 50 ms deadline of 20 concurrent calls (or
than the 0.1 s after which 20 others are cancelled): none of them may reach
the model. The server answers them as TF Serving does: DEADLINE_EXCEEDED (TF
Serving bounds the run by the deadline, run_options' timeout from
`context->raw_deadline()`, tensorflow_serving/model_servers/prediction_service_impl.cc:43-46)
and CANCELLED (gRPC's status for a cancelled call), counted in the metrics.
(gRPC itself never starts a handler for a call that expired or was
cancelled while it waited for a worker thread.)
"""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from core.config import ServingConfig
from serving import servable
from serving.runtime import ServingRuntime
from serving.server import build_server
from serving.version_manager import VersionManager
from tests.serving import half_plus_two

MODEL = "default"
CALLS = 20
BEFORE_THE_MODEL_SECONDS = 0.3


@pytest.fixture
def server(tmp_path: Path, monkeypatch):
    """half_plus_two; each call spends `BEFORE_THE_MODEL_SECONDS` before its model call, which is counted."""
    half_plus_two.build(str(tmp_path / MODEL / "1"))
    manager = VersionManager(str(tmp_path), poll_seconds=3600)
    manager.poll_once()
    runs, real_run, real_resolve = [], servable.LoadedVersion.run, ServingRuntime.resolve

    def counted_run(self, signature_name, arrays):
        runs.append(float(arrays["x"].reshape(-1)[0]))
        return real_run(self, signature_name, arrays)

    def slow_resolve(self, *spec_and_call):
        time.sleep(BEFORE_THE_MODEL_SECONDS)
        return real_resolve(self, *spec_and_call)

    monkeypatch.setattr(servable.LoadedVersion, "run", counted_run)
    monkeypatch.setattr(ServingRuntime, "resolve", slow_resolve)
    grpc_server, port, runtime = build_server(manager, ServingConfig(port=0, workers=CALLS + 1))
    grpc_server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield {
        "stub": prediction_service_pb2_grpc.PredictionServiceStub(channel),
        "runs": runs,
        "runtime": runtime,
    }
    channel.close()
    grpc_server.stop(grace=None)


def request(x: float) -> predict_pb2.PredictRequest:
    predict = predict_pb2.PredictRequest()
    predict.model_spec.name = MODEL
    predict.inputs["x"].dtype = types_pb2.DT_FLOAT
    predict.inputs["x"].tensor_shape.dim.add().size = 1
    predict.inputs["x"].float_val.append(x)
    return predict


def answered(runtime, status: str) -> float:
    return runtime.metrics.request_count.labels(MODEL, status)._value.get()


def wait_until_answered(runtime, status: str, count: int) -> float:
    """The server's count of `status` answers once it reaches `count` (or after 10 s)."""
    deadline = time.monotonic() + 10
    while answered(runtime, status) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return answered(runtime, status)


def counted_by_the_server(runtime, status: str) -> float:
    """How many of the `CALLS` calls the server answered with `status`, checked to be a real share.

    Every call that reached a handler is answered and counted; on a loaded
    host gRPC may drop some before any handler starts (see the module
    docstring), so at least one and at most all of them are counted, never more.
    """
    counted = wait_until_answered(runtime, status, CALLS)
    assert 1 <= counted <= CALLS, f"{counted} {status} answers counted for {CALLS} calls"
    return counted


def test_calls_whose_deadline_passed_before_their_model_call_get_no_model_work(server):
    stub = server["stub"]
    expired = [stub.Predict.future(request(float(i)), timeout=0.05) for i in range(CALLS)]
    assert {f.exception(timeout=30).code() for f in expired} == {grpc.StatusCode.DEADLINE_EXCEEDED}
    counted_by_the_server(server["runtime"], "DEADLINE_EXCEEDED")
    assert list(stub.Predict(request(2.0), timeout=30).outputs["y"].float_val) == [3.0]
    assert server["runs"] == [2.0]  # none of the 20 expired calls reached the model


def test_cancelled_calls_get_no_model_work(server):
    stub = server["stub"]
    cancelled = [stub.Predict.future(request(float(i)), timeout=30) for i in range(CALLS)]
    time.sleep(BEFORE_THE_MODEL_SECONDS / 3)
    for call in cancelled:
        call.cancel()
    counted_by_the_server(server["runtime"], "CANCELLED")
    assert list(stub.Predict(request(2.0), timeout=30).outputs["y"].float_val) == [3.0]
    assert server["runs"] == [2.0]
