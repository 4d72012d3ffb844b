"""Request batching with TF Serving's parameters: concurrent requests share model calls, each its rows."""

from __future__ import annotations

import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from core.config import ServingConfig
from core.errors import InputError
from serving.batching import BatchingOptions, BatchScheduler
from serving.calls import Call
from serving.servable import InvalidRequestError, ServingStatusError
from serving.server import start
from tests.serving import half_plus_two


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("models")
    half_plus_two.build(str(base / "default" / "1"))
    return base


def write_parameters(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_parameters_are_read_in_tf_servings_text_format_with_its_defaults(tmp_path: Path):
    options = BatchingOptions.from_file(
        write_parameters(
            tmp_path / "batching.txt",
            "max_batch_size { value: 64 }\nbatch_timeout_micros { value: 2000 }\n"
            'thread_pool_name { value: "batch" }\n',
        )
    )
    assert (options.max_batch_size, options.batch_timeout_micros) == (64, 2000)
    assert options.max_enqueued_batches == 10  # TF Serving's default where the file says nothing


def test_the_config_files_shipped_for_tf_serving_parse():
    from core.config import REPO_ROOT
    from serving.rest_server import prometheus_path

    shipped = Path(REPO_ROOT) / "serving"
    options = BatchingOptions.from_file(str(shipped / "batching.config"))
    assert (options.max_batch_size, options.batch_timeout_micros, options.num_batch_threads) == (32, 0, 2)
    config = ServingConfig(monitoring_config_file=str(shipped / "monitoring.config"))
    assert prometheus_path(config) == "/monitoring/prometheus/metrics"


# Bad values as TensorFlow's AddQueueAfterRewritingOptions (shared_batch_scheduler.h) and TF Serving's
# batching_session.cc:1010-1050 / bundle_factory_util.cc:113-125 refuse them, and this server's bounds.
BAD_PARAMETERS = [
    ("max_batch_size: 64", "BatchingParameters"),
    ("max_batch_size { value: 0 }", "max_batch_size must be positive"),
    ("batch_timeout_micros { value: 9223372036854775807 }", "batch_timeout_micros must be between"),
    ("batch_timeout_micros { value: -1 }", "batch_timeout_micros must be between"),
    ("max_enqueued_batches { value: -1 }", "max_enqueued_batches must be positive"),
    ("num_batch_threads { value: 0 }", "num_batch_threads must be between"),
    ("num_batch_threads { value: 1000000 }", "num_batch_threads must be between"),
    (
        "max_batch_size { value: 8 } allowed_batch_sizes: 8 allowed_batch_sizes: 4",
        "allowed_batch_sizes entries must be positive and increasing",
    ),
    (
        "max_batch_size { value: 8 } allowed_batch_sizes: 2 allowed_batch_sizes: 4",
        "Last entry in allowed_batch_sizes must match max_batch_size",
    ),
    (
        "max_batch_size { value: 8 } enable_large_batch_splitting { value: true } "
        "max_execution_batch_size { value: 4 } allowed_batch_sizes: 2 allowed_batch_sizes: 8",
        "Last entry in allowed_batch_sizes must match max_execution_batch_size",
    ),
    ("max_execution_batch_size { value: 4 }", "max_execution_batch_size is used only with"),
    (
        "max_batch_size { value: 8 } enable_large_batch_splitting { value: true } "
        "max_execution_batch_size { value: 16 }",
        "max_execution_batch_size must be between 1 and max_batch_size",
    ),
]


@pytest.mark.parametrize("text, named", BAD_PARAMETERS)
def test_a_bad_parameters_file_is_bad_input_naming_file_and_field(tmp_path: Path, text: str, named: str):
    path = write_parameters(tmp_path / "batching.txt", text)
    with pytest.raises(InputError, match=named) as caught:
        BatchingOptions.from_file(path)
    assert path in str(caught.value)


def test_fmnist_serve_with_a_bad_batching_value_exits_2_naming_file_and_field(
    base: Path, tmp_path: Path, capsys
):
    """Issue #20, item 9: INT64_MAX was accepted, and the first request killed both batch threads."""
    from cli.main import main

    path = write_parameters(tmp_path / "batching.txt", "batch_timeout_micros { value: 9223372036854775807 }")
    argv = ["serve", "--model-base-path", str(base), "--port", "0", "--rest-api-port", "0",
            "--enable-batching", "--batching-parameters-file", path]  # fmt: skip
    assert main(argv) == 2
    assert f"{path}: batch_timeout_micros must be between" in capsys.readouterr().err


def test_allowed_batch_sizes_and_large_batch_splitting_are_read_from_the_file(tmp_path: Path):
    options = BatchingOptions.from_file(
        write_parameters(
            tmp_path / "batching.txt",
            "max_batch_size { value: 64 } enable_large_batch_splitting { value: true } "
            "max_execution_batch_size { value: 8 } allowed_batch_sizes: 2 allowed_batch_sizes: 8",
        )
    )
    assert options.allowed_batch_sizes == (2, 8) and options.enable_large_batch_splitting
    assert (options.max_batch_size, options.execution_batch_size) == (64, 8)


def predict(stub, x: float) -> float:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "default"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([[x]], dtype=tf.float32))
    return stub.Predict(request, timeout=30).outputs["y"].float_val[0]


def test_concurrent_requests_share_model_calls_and_each_gets_its_own_answer(base: Path, tmp_path: Path):
    parameters = write_parameters(
        tmp_path / "batching.txt", "max_batch_size { value: 32 }\nbatch_timeout_micros { value: 20000 }\n"
    )
    config = ServingConfig(
        model_base_path=str(base), port=0, rest_api_port=0, enable_batching=True,
        batching_parameters_file=parameters,
    )  # fmt: skip
    running = start(config)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            xs = [float(i) for i in range(96)]
            with futures.ThreadPoolExecutor(32) as pool:
                answers = list(pool.map(lambda x: predict(stub, x), xs))
        assert answers == [0.5 * x + 2 for x in xs]  # every request got its own rows back
        scheduler = running.runtime.scheduler
        assert scheduler.rows_run == 96
        assert scheduler.batches_run < 96 / 2  # most model calls served several requests
    finally:
        running.stop()


class BlockingVersion:
    """A stand-in model version whose calls wait until released, to fill the scheduler's queue."""

    name, version = "m", 1

    def __init__(self) -> None:
        self.release = threading.Event()
        self.seen: list[np.ndarray] = []

    def run(self, signature: str, arrays: dict) -> dict:
        self.seen.append(arrays["x"].copy())
        self.release.wait(10)
        return {"y": arrays["x"] * 2}


def test_a_full_queue_answers_unavailable_and_an_oversized_request_invalid_argument():
    scheduler = BatchScheduler(BatchingOptions(max_batch_size=2, max_enqueued_batches=1, num_batch_threads=1))
    version = BlockingVersion()
    one_row = {"x": np.ones((1, 1), np.float32)}
    try:
        with pytest.raises(InvalidRequestError, match="larger than maximum input batch size 2"):
            scheduler.run(version, "s", {"x": np.ones((3, 1), np.float32)})
        with futures.ThreadPoolExecutor(4) as pool:
            running = pool.submit(scheduler.run, version, "s", one_row)  # taken by the only batch thread
            while scheduler._queues or not running.running():
                threading.Event().wait(0.01)
            threading.Event().wait(0.05)
            queued = pool.submit(scheduler.run, version, "s", one_row)  # the one batch allowed to wait
            while not scheduler._queues:
                threading.Event().wait(0.01)
            with pytest.raises(ServingStatusError) as caught:
                scheduler.run(version, "s", {"x": np.ones((2, 1), np.float32)})
            assert caught.value.code == "UNAVAILABLE"
            version.release.set()
            assert running.result()["y"].tolist() == [[2.0]] and queued.result()["y"].tolist() == [[2.0]]
    finally:
        version.release.set()
        scheduler.stop()


class RecordingVersion:
    """A stand-in model version (y = 2 x) that records the rows of every model call."""

    name, version = "m", 1

    def __init__(self) -> None:
        self.calls: list[np.ndarray] = []

    def run(self, signature: str, arrays: dict) -> dict:
        self.calls.append(arrays["x"].copy())
        return {"y": arrays["x"] * 2}


def rows(values: list[float]) -> dict[str, np.ndarray]:
    return {"x": np.array(values, np.float32).reshape(-1, 1)}


def test_allowed_batch_sizes_pad_a_batch_with_its_first_row_as_tf_serving_does():
    """batching_session.cc:496-497 rounds up to an allowed size; 540-557 pads with the first row."""
    scheduler = BatchScheduler(
        BatchingOptions(max_batch_size=8, allowed_batch_sizes=(2, 4, 8), num_batch_threads=1)
    )
    version = RecordingVersion()
    try:
        answer = scheduler.run(version, "s", rows([1.0, 2.0, 3.0]))
    finally:
        scheduler.stop()
    assert [c.reshape(-1).tolist() for c in version.calls] == [[1.0, 2.0, 3.0, 1.0]]  # run as 4 rows
    assert answer["y"].reshape(-1).tolist() == [2.0, 4.0, 6.0]  # the padding's output is dropped


def test_large_batch_splitting_runs_a_large_request_as_several_model_calls_in_order():
    """max_execution_batch_size bounds each model call; a request over max_batch_size is still
    INVALID_ARGUMENT, as in TensorFlow's `Queue::ValidateBatchTaskQueueCapacity`
    (tensorflow/core/kernels/batching_util/shared_batch_scheduler.h).
    """
    options = BatchingOptions(
        max_batch_size=16, enable_large_batch_splitting=True, max_execution_batch_size=4, num_batch_threads=1
    )
    scheduler = BatchScheduler(options)
    version = RecordingVersion()
    values = [float(i) for i in range(10)]
    try:
        answer = scheduler.run(version, "s", rows(values))
        with pytest.raises(InvalidRequestError, match="larger than maximum input batch size 16"):
            scheduler.run(version, "s", rows([0.0] * 17))
    finally:
        scheduler.stop()
    assert sorted(len(c) for c in version.calls) == [2, 4, 4]
    assert answer["y"].reshape(-1).tolist() == [2 * v for v in values]


class FakeCall(Call):
    """A caller whose deadline and presence the test sets."""

    def __init__(self, seconds: float | None = None) -> None:
        self.deadline = None if seconds is None else time.monotonic() + seconds
        self.here = True

    def remaining(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def active(self) -> bool:
        return self.here


def busy_scheduler() -> tuple[BatchScheduler, BlockingVersion, futures.Future, futures.ThreadPoolExecutor]:
    """A one-thread scheduler whose thread is held by a blocked model call until `version.release`."""
    scheduler = BatchScheduler(BatchingOptions(max_batch_size=8, num_batch_threads=1))
    version = BlockingVersion()
    pool = futures.ThreadPoolExecutor(4)
    holding = pool.submit(scheduler.run, version, "s", rows([1.0]))
    while scheduler._queues or not holding.running():
        time.sleep(0.01)
    time.sleep(0.05)
    return scheduler, version, holding, pool


def test_a_queued_request_whose_client_left_is_dropped_before_it_is_batched():
    """Issue #20, item 10: work for callers that are gone delayed the next good call 3.2 s."""
    scheduler, version, holding, pool = busy_scheduler()
    left = FakeCall()
    try:
        abandoned = pool.submit(scheduler.run, version, "s", rows([5.0]), left)
        while not scheduler._queues:
            time.sleep(0.01)
        left.here = False  # the client cancels while its request waits for the batch thread
        waiting = pool.submit(scheduler.run, version, "s", rows([7.0]), FakeCall())
        version.release.set()
        with pytest.raises(ServingStatusError) as caught:
            abandoned.result(timeout=10)
        assert caught.value.code == "CANCELLED"
        assert waiting.result(timeout=10)["y"].tolist() == [[14.0]] and holding.result(timeout=10)
        assert 5.0 not in [v for call in version.seen for v in call.reshape(-1)]
    finally:
        version.release.set()
        scheduler.stop()
        pool.shutdown()


def test_a_caller_stops_waiting_at_its_deadline_and_its_request_never_runs():
    """batching_session.cc:770-774: a deadline passed in the queue is RESOURCE_EXHAUSTED there."""
    scheduler, version, holding, pool = busy_scheduler()
    try:
        started = time.monotonic()
        with pytest.raises(ServingStatusError) as caught:
            scheduler.run(version, "s", rows([5.0]), FakeCall(seconds=0.2))
        assert caught.value.code == "RESOURCE_EXHAUSTED" and time.monotonic() - started < 5
        assert "timeout exceeded while waiting in batching queue" in str(caught.value)
        assert not scheduler._queues  # withdrawn: nothing left to batch
        version.release.set()
        holding.result(timeout=10)
        assert 5.0 not in [v for call in version.seen for v in call.reshape(-1)]
    finally:
        version.release.set()
        scheduler.stop()
        pool.shutdown()


def test_a_batch_thread_survives_a_failure_outside_the_model_call(monkeypatch):
    """Issue #20, item 9: an OverflowError while scheduling killed both threads; later requests hung."""
    scheduler = BatchScheduler(BatchingOptions(max_batch_size=8, num_batch_threads=1))
    real_ready = scheduler._ready
    failures = iter([OverflowError("timeout value is too large")])

    def flaky_ready(now: float):
        for failure in failures:
            raise failure
        return real_ready(now)

    monkeypatch.setattr(scheduler, "_ready", flaky_ready)
    version = RecordingVersion()
    try:
        with futures.ThreadPoolExecutor(1) as pool:
            with pytest.raises(ServingStatusError) as caught:
                pool.submit(scheduler.run, version, "s", rows([1.0])).result(timeout=10)
            assert caught.value.code == "INTERNAL" and "timeout value is too large" in str(caught.value)
            answer = pool.submit(scheduler.run, version, "s", rows([3.0])).result(timeout=10)
        assert answer["y"].tolist() == [[6.0]]
    finally:
        scheduler.stop()


def test_drain_runs_a_waiting_batch_at_once_and_stop_answers_what_is_left():
    scheduler = BatchScheduler(BatchingOptions(max_batch_size=8, batch_timeout_micros=60_000_000))
    version = RecordingVersion()
    with futures.ThreadPoolExecutor(2) as pool:
        waiting = pool.submit(scheduler.run, version, "s", rows([1.0]))
        time.sleep(0.2)
        assert not waiting.done()  # a partial batch waits for its timeout (a minute)
        scheduler.drain()
        assert waiting.result(timeout=10)["y"].tolist() == [[2.0]]
    stopping = BatchScheduler(BatchingOptions(max_batch_size=8, batch_timeout_micros=60_000_000))
    with futures.ThreadPoolExecutor(1) as pool:
        queued = pool.submit(stopping.run, version, "s", rows([1.0]))
        time.sleep(0.2)
        stopping.stop()
        with pytest.raises(ServingStatusError) as caught:
            queued.result(timeout=10)
    assert caught.value.code == "UNAVAILABLE"
