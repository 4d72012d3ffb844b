"""Request batching with TF Serving's parameters: concurrent requests share model calls, each its rows."""

from __future__ import annotations

import threading
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


@pytest.mark.parametrize(
    "text, named",
    [("max_batch_size: 64", "BatchingParameters"), ("max_batch_size { value: 0 }", "max_batch_size")],
)
def test_a_bad_parameters_file_is_bad_input_naming_file_and_field(tmp_path: Path, text: str, named: str):
    path = write_parameters(tmp_path / "batching.txt", text)
    with pytest.raises(InputError, match=named) as caught:
        BatchingOptions.from_file(path)
    assert path in str(caught.value)


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

    def run(self, signature: str, arrays: dict) -> dict:
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
