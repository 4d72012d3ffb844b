"""SIGTERM always ends `fmnist serve`: in-flight calls get the grace the README promises, then it exits.

Issue #20, item 9: with batching, a request waiting for its batch kept the
server alive after SIGTERM (17 minutes; Python waits for every request
thread at exit). Now queued batches run at once when the stop begins, and if
a call is still stuck when the grace and a margin are over (a model call
that never returns), the process exits anyway with exit code 1.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving.server import SHUTDOWN_GRACE_SECONDS, STOP_MARGIN_SECONDS
from tests.serving import half_plus_two, serve_process

MODEL = "default"
SLACK_SECONDS = 10.0  # the interpreter's own exit, on a busy machine
# fmnist serve, with every model call blocking forever.
STUCK_MODEL = (
    "import sys, threading\n"
    "from serving import servable\n"
    "servable.LoadedVersion.run = lambda *_: threading.Event().wait()\n"
    "from cli.main import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("models")
    half_plus_two.build(str(base / MODEL / "1"))
    return base


def request() -> predict_pb2.PredictRequest:
    predict = predict_pb2.PredictRequest()
    predict.model_spec.name = MODEL
    predict.inputs["x"].dtype = types_pb2.DT_FLOAT
    predict.inputs["x"].tensor_shape.dim.add().size = 1
    predict.inputs["x"].float_val.append(2.0)
    return predict


def stop_with_sigterm(process: subprocess.Popen) -> tuple[float, str]:
    """SIGTERM; seconds until the process ended (it is killed if it outlives the bound) and its stderr."""
    process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    try:
        _, err = process.communicate(timeout=SHUTDOWN_GRACE_SECONDS + STOP_MARGIN_SECONDS + SLACK_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
        pytest.fail(f"fmnist serve still ran {time.monotonic() - started:.0f} s after SIGTERM: {err[-2000:]}")
    return time.monotonic() - started, err


def test_sigterm_runs_a_batch_still_waiting_for_its_timeout_and_exits_0(base: Path, tmp_path: Path):
    parameters = tmp_path / "batching.config"
    parameters.write_text("max_batch_size { value: 32 } batch_timeout_micros { value: 30000000 }")
    flags = [f"--model_base_path={base}", "--enable_batching", f"--batching_parameters_file={parameters}"]
    process, channel = serve_process.start(MODEL, flags)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    waiting = stub.Predict.future(request(), timeout=60)  # a partial batch: it would wait 30 s
    time.sleep(1.0)
    assert not waiting.done()
    seconds, err = stop_with_sigterm(process)
    assert list(waiting.result(timeout=1).outputs["y"].float_val) == [3.0]  # drained, not dropped
    assert process.returncode == 0, err
    assert seconds < SHUTDOWN_GRACE_SECONDS  # it ran at once: nothing had to wait for the grace
    channel.close()


def test_sigterm_ends_the_process_even_when_a_model_call_never_returns(base: Path):
    command = [sys.executable, "-c", STUCK_MODEL]
    process, channel = serve_process.start(MODEL, [f"--model_base_path={base}"], command=command)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    stuck = stub.Predict.future(request(), timeout=120)
    time.sleep(1.0)
    seconds, err = stop_with_sigterm(process)
    assert process.returncode == 1 and "exiting anyway" in err
    assert seconds >= SHUTDOWN_GRACE_SECONDS  # the stuck call had its grace first
    assert stuck.exception(timeout=5) is not None
    channel.close()
