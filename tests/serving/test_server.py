"""The TF Serving protocol end to end: the real pushed model of a slice run, served over loopback gRPC.

Requests go through real sockets with the official `tensorflow-serving-api`
stubs (as any TF Serving client would send them) and through `ServingClient`.
"""

import shutil
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from components.features import CLASS_NAMES
from serving.client import ServingClient, ServingError, load_images
from serving.model_store import ModelStore
from serving.server import ServerConfig, build_server

MODEL = "fashion_mnist"
pytestmark = pytest.mark.e2e  # the tests serve the model a pipeline run on a slice pushed


@pytest.fixture
def served(pipeline_runs: dict, tmp_path: Path):
    """A server over a fresh base path holding the pushed model as version 1."""
    base = tmp_path / "models"
    shutil.copytree(pipeline_runs["first"]["model"]["pushed_path"], base / MODEL / "1")
    store = ModelStore(str(base), poll_seconds=3600)  # tests poll by hand
    store.poll_once()
    server, port = build_server(store, ServerConfig(model_base_path=str(base), port=0, max_batch=64))
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield {
        "base": base,
        "store": store,
        "port": port,
        "predict": prediction_service_pb2_grpc.PredictionServiceStub(channel),
        "models": model_service_pb2_grpc.ModelServiceStub(channel),
        "client": ServingClient(f"127.0.0.1:{port}", timeout=30),
    }
    channel.close()
    server.stop(grace=None)


@pytest.fixture(scope="module")
def test_images(slice_data: Path) -> tuple[np.ndarray, list[bytes]]:
    files = sorted(str(p) for p in (slice_data / "test").glob("*.tfrecord.gz"))
    serialized = [r.numpy() for r in tf.data.TFRecordDataset(files, "GZIP").take(8)]
    parsed = tf.io.parse_example(serialized, {"image": tf.io.FixedLenFeature([784], tf.int64)})
    return parsed["image"].numpy().reshape(-1, 28, 28).astype(np.uint8), serialized


def images_request(
    images, signature="predict_images", version=None, name=MODEL
) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(images))
    return request


def test_predict_images_returns_classes_and_the_version(served, test_images):
    images, _ = test_images
    predictions, version = served["client"].predict_images(images)
    assert version == 1 and len(predictions) == len(images)
    for p in predictions:
        assert p.class_name == CLASS_NAMES[p.class_id]
        assert p.probability == pytest.approx(p.probabilities.max())
        assert p.probabilities.sum() == pytest.approx(1.0, abs=1e-4)


def test_serving_default_takes_serialized_examples_and_filters_outputs(served, test_images):
    images, serialized = test_images
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.inputs["examples"].CopyFrom(tf.make_tensor_proto(serialized))
    request.output_filter.append("probabilities")
    response = served["predict"].Predict(request, timeout=30)
    assert response.model_spec.signature_name == "serving_default" and response.model_spec.version.value == 1
    by_example = tf.make_ndarray(response.outputs["probabilities"])
    by_pixels = tf.make_ndarray(
        served["predict"].Predict(images_request(images), timeout=30).outputs["probabilities"]
    )
    np.testing.assert_allclose(by_example, by_pixels, rtol=1e-5, atol=1e-6)


def test_status_and_metadata(served):
    status = served["client"].status(MODEL).model_version_status
    assert [(s.version, s.state) for s in status] == [(1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]
    signatures = served["client"].metadata(MODEL).signature_def
    assert set(signatures) == {"serving_default", "predict_images"}
    assert set(signatures["predict_images"].outputs) == {"probabilities", "class_ids", "class_names"}


def _bad(images, **changes):
    request = images_request(images)
    for key, value in changes.items():
        if key == "inputs":
            request.inputs.clear()
            for name, tensor in value.items():
                request.inputs[name].CopyFrom(tensor)
        elif key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    return request


@pytest.mark.parametrize(
    ("case", "code", "message"),
    [
        ("unknown model", grpc.StatusCode.NOT_FOUND, "model 'shoes' is not being served"),
        ("unknown version", grpc.StatusCode.NOT_FOUND, "version 99 is not available"),
        ("unknown signature", grpc.StatusCode.NOT_FOUND, "has no signature 'nope'"),
        ("float pixels", grpc.StatusCode.INVALID_ARGUMENT, "input 'images' must be uint8, got float32"),
        ("wrong rank", grpc.StatusCode.INVALID_ARGUMENT, "must have shape (None, 28, 28), got [2, 784]"),
        ("missing input", grpc.StatusCode.INVALID_ARGUMENT, "missing ['images'], unexpected ['pixels']"),
        ("no images", grpc.StatusCode.INVALID_ARGUMENT, "holds no examples"),
        ("too many images", grpc.StatusCode.INVALID_ARGUMENT, "holds 65 examples; the limit is 64"),
        ("garbage example", grpc.StatusCode.INVALID_ARGUMENT, ""),
    ],
)
def test_bad_requests_get_tf_serving_status_codes_and_the_server_keeps_serving(
    served, test_images, case, code, message
):
    images, _ = test_images
    requests = {
        "unknown model": _bad(images, name="shoes"),
        "unknown version": _bad(images, version=99),
        "unknown signature": _bad(images, signature_name="nope"),
        "float pixels": _bad(images, inputs={"images": tf.make_tensor_proto(images.astype(np.float32))}),
        "wrong rank": _bad(images, inputs={"images": tf.make_tensor_proto(images[:2].reshape(2, 784))}),
        "missing input": _bad(images, inputs={"pixels": tf.make_tensor_proto(images)}),
        "no images": _bad(images, inputs={"images": tf.make_tensor_proto(images[:0])}),
        "too many images": _bad(
            images, inputs={"images": tf.make_tensor_proto(np.zeros((65, 28, 28), np.uint8))}
        ),
        "garbage example": _bad(
            images,
            signature_name="serving_default",
            inputs={"examples": tf.make_tensor_proto([b"\x00garbage"])},
        ),
    }
    with pytest.raises(grpc.RpcError) as failure:
        served["predict"].Predict(requests[case], timeout=30)
    assert failure.value.code() == code
    assert message in failure.value.details()
    _, version = served["client"].predict_images(images[:1])  # still serving
    assert version == 1


def test_hot_reload_under_concurrent_traffic_loses_no_request(served, test_images):
    images, _ = test_images
    base, store = served["base"], served["store"]
    versions, errors = [], []

    def traffic():
        client = ServingClient(f"127.0.0.1:{served['port']}", timeout=30)
        for _ in range(25):
            try:
                versions.append(client.predict_images(images[:2])[1])
            except ServingError as err:
                errors.append(err)

    threads = [threading.Thread(target=traffic) for _ in range(8)]
    for t in threads:
        t.start()
    shutil.copytree(base / MODEL / "1", base / MODEL / "2")
    store.poll_once()  # loads version 2 while the traffic runs
    for t in threads:
        t.join()
    assert errors == [] and len(versions) == 200 and set(versions) <= {1, 2}
    assert served["client"].predict_images(images[:1])[1] == 2
    states = {s.version: s.state for s in served["client"].status(MODEL).model_version_status}
    assert states == {
        1: get_model_status_pb2.ModelVersionStatus.END,
        2: get_model_status_pb2.ModelVersionStatus.AVAILABLE,
    }


def test_incomplete_and_corrupt_versions_never_replace_the_serving_one(served, test_images):
    images, _ = test_images
    base, store = served["base"], served["store"]
    half_copied = base / MODEL / "5"
    shutil.copytree(base / MODEL / "1" / "variables", half_copied / "variables")  # no saved_model.pb yet
    store.poll_once()
    assert served["client"].predict_images(images[:1])[1] == 1

    corrupt = base / MODEL / "6"
    shutil.copytree(base / MODEL / "1", corrupt)
    (corrupt / "saved_model.pb").write_bytes(b"not a SavedModel")
    store.poll_once()
    assert served["client"].predict_images(images[:1])[1] == 1
    status = {s.version: s for s in served["client"].status(MODEL).model_version_status}
    assert status[6].state == get_model_status_pb2.ModelVersionStatus.END
    assert status[6].status.error_message
    assert status[1].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE


def test_a_removed_version_is_unloaded(served, test_images):
    shutil.rmtree(served["base"] / MODEL / "1")
    served["store"].poll_once()
    with pytest.raises(ServingError, match="NOT_FOUND: model 'fashion_mnist' is not being served"):
        served["client"].predict_images(test_images[0][:1])


def test_client_reports_a_server_that_is_down():
    client = ServingClient("127.0.0.1:1", timeout=2, retries=1)
    with pytest.raises(ServingError, match="no TF Serving server answers at 127.0.0.1:1"):
        client.predict_images(np.zeros((1, 28, 28), np.uint8))


def test_metadata_request_must_ask_for_signature_def(served):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["everything"])
    request.model_spec.name = MODEL
    with pytest.raises(grpc.RpcError) as failure:
        served["predict"].GetModelMetadata(request, timeout=30)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_load_images_reads_png_npy_tfrecords_and_idx(
    tmp_path: Path, official_dir: Path, slice_data: Path, test_images
):
    from PIL import Image

    images, _ = test_images
    Image.fromarray(images[0]).save(tmp_path / "one.png")
    np.save(tmp_path / "batch.npy", images)
    np.testing.assert_array_equal(load_images(str(tmp_path / "one.png")), images[:1])
    np.testing.assert_array_equal(load_images(str(tmp_path / "batch.npy")), images)
    idx_images = load_images(str(official_dir / "t10k-images-idx3-ubyte.gz"))
    assert idx_images.shape == (10000, 28, 28)
    np.testing.assert_array_equal(idx_images[:8], images)
    from_tfrecords = load_images(str(next((slice_data / "test").glob("*.tfrecord.gz"))))
    assert from_tfrecords.shape == (300, 28, 28)
    np.testing.assert_array_equal(from_tfrecords[:8], images)
    (tmp_path / "garbage.tfrecord").write_bytes(b"not a record")
    with pytest.raises(ValueError, match="garbage.tfrecord: not a TFRecord file of examples"):
        load_images(str(tmp_path / "garbage.tfrecord"))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "broken-idx3-ubyte.gz").write_bytes(b"\x1f\x8b\x08garbage")
    for name in ("broken.png", "broken-idx3-ubyte.gz"):
        with pytest.raises(ValueError, match=f"{name}: cannot be read as"):
            load_images(str(tmp_path / name))
    np.save(tmp_path / "bad.npy", np.zeros((2, 32, 32)))
    with pytest.raises(ValueError, match="bad.npy: array of shape"):
        load_images(str(tmp_path / "bad.npy"))


def test_pushed_model_carries_warmup_requests_that_replay(pipeline_runs: dict):
    from serving.warmup import read_warmup

    requests = read_warmup(pipeline_runs["first"]["model"]["pushed_path"])
    assert {r.model_spec.signature_name for r in requests} == {"predict_images", "serving_default"}


def test_a_version_whose_warmup_fails_is_not_served(served, test_images):
    from serving.warmup import WARMUP_PATH

    base, store = served["base"], served["store"]
    broken = base / MODEL / "7"
    shutil.copytree(base / MODEL / "1", broken)
    log = predict_pb2.PredictRequest()
    log.model_spec.signature_name = "predict_images"
    log.inputs["images"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 5), np.float32)))
    from tensorflow_serving.apis import prediction_log_pb2

    with tf.io.TFRecordWriter(str(broken / WARMUP_PATH)) as writer:
        writer.write(
            prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=log)
            ).SerializeToString()
        )
    store.poll_once()
    status = {s.version: s for s in served["client"].status(MODEL).model_version_status}
    assert status[7].state == get_model_status_pb2.ModelVersionStatus.END
    assert "must be uint8" in status[7].status.error_message
    assert served["client"].predict_images(test_images[0][:1])[1] == 1


def test_request_logs_are_prediction_logs_readable_back(pipeline_runs: dict, tmp_path: Path, test_images):
    from tensorflow_serving.apis import prediction_log_pb2

    base = tmp_path / "models"
    shutil.copytree(pipeline_runs["first"]["model"]["pushed_path"], base / MODEL / "3")
    store = ModelStore(str(base), poll_seconds=3600)
    store.poll_once()
    config = ServerConfig(model_base_path=str(base), port=0, request_log_dir=str(tmp_path / "logs"))
    server, port = build_server(store, config)
    server.start()
    try:
        client = ServingClient(f"127.0.0.1:{port}", timeout=30)
        for i in range(3):
            client.predict_images(test_images[0][i : i + 2])
    finally:
        server.stop(grace=None)
    files = sorted((tmp_path / "logs").glob("prediction_log-*.tfrecord"))
    records = [
        prediction_log_pb2.PredictionLog.FromString(r.numpy())
        for r in tf.data.TFRecordDataset([str(f) for f in files])
    ]
    assert len(records) == 3
    first = records[0].predict_log
    np.testing.assert_array_equal(tf.make_ndarray(first.request.inputs["images"]), test_images[0][0:2])
    assert first.response.model_spec.version.value == 3
    assert set(first.response.outputs) == {"probabilities", "class_ids", "class_names"}


def test_request_logger_samples_and_rotates(tmp_path: Path):
    from serving.request_log import RequestLogger

    request, response = predict_pb2.PredictRequest(), predict_pb2.PredictResponse()
    logger = RequestLogger(str(tmp_path), sampling_rate=1.0, records_per_file=2)
    assert all(logger.log_predict(request, response) for _ in range(5))
    logger.close()
    assert len(list(tmp_path.glob("prediction_log-*.tfrecord"))) == 3
    never = RequestLogger(str(tmp_path / "none"), sampling_rate=0.0)
    assert not any(never.log_predict(request, response) for _ in range(20))
    with pytest.raises(ValueError, match="sampling rate must be in"):
        RequestLogger(str(tmp_path), sampling_rate=1.5)


def test_fmnist_serve_answers_then_stops_cleanly_on_sigterm(pipeline_runs: dict, tmp_path: Path):
    import signal
    import subprocess
    import sys
    import time

    import portpicker

    base = tmp_path / "models"
    shutil.copytree(pipeline_runs["first"]["model"]["pushed_path"], base / MODEL / "4")
    port = portpicker.pick_unused_port()
    command = [
        str(Path(sys.executable).parent / "fmnist"),
        "serve",
        "--model-base-path",
        str(base),
        "--port",
        str(port),
    ]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        client = ServingClient(f"127.0.0.1:{port}", timeout=5, retries=0)
        deadline = time.monotonic() + 120
        while True:
            try:
                states = [s.state for s in client.status(MODEL).model_version_status]
                break
            except ServingError:
                assert time.monotonic() < deadline and server.poll() is None, server.stdout.read()
                time.sleep(0.5)
        assert states == [get_model_status_pb2.ModelVersionStatus.AVAILABLE]
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
        assert f"on 127.0.0.1:{port}" in server.stdout.read()
    finally:
        server.kill()
