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
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from core.config import ServingConfig
from core.errors import ServingError
from core.vocabulary import CLASS_NAMES
from serving.client import RequestRefusedError, ServingClient
from serving.server import build_server, make_manager
from serving.version_manager import VersionManager

MODEL = "fashion_mnist"
AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
pytestmark = pytest.mark.e2e  # the tests serve the model a pipeline run on a slice pushed


@pytest.fixture
def served(pipeline_runs: dict, tmp_path: Path):
    """A server over a fresh base path holding the pushed model as version 1."""
    base = tmp_path / "models"
    shutil.copytree(pipeline_runs["first"].model.pushed_path, base / MODEL / "1")
    store = VersionManager(str(base), poll_seconds=3600)  # tests poll by hand
    store.poll_once()
    server, port, runtime = build_server(
        store, ServingConfig(model_base_path=str(base), port=0, max_batch=64)
    )
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield {
        "runtime": runtime,
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
    assert set(signatures) == {"serving_default", "predict_images", "classify"}
    assert set(signatures["predict_images"].outputs) == {"probabilities", "class_ids", "class_names"}
    assert signatures["classify"].method_name == "tensorflow/serving/classify"
    assert set(signatures["classify"].inputs) == {"inputs"}
    assert set(signatures["classify"].outputs) == {"classes", "scores"}


def test_classify_returns_every_class_name_with_its_score(served, test_images):
    _, serialized = test_images
    examples = [tf.train.Example.FromString(s) for s in serialized]
    scores, version = served["client"].classify(examples)
    probabilities, _ = served["client"].predict_examples(serialized)
    assert version == 1 and len(scores) == len(examples)
    for per_class, expected in zip(scores, probabilities, strict=True):
        assert list(per_class) == list(CLASS_NAMES)
        np.testing.assert_allclose([per_class[n] for n in CLASS_NAMES], expected, rtol=1e-5, atol=1e-6)


def test_classify_merges_context_features_into_each_example(served, test_images):
    _, serialized = test_images
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = "classify"
    with_context = request.input.example_list_with_context
    with_context.context.CopyFrom(tf.train.Example.FromString(serialized[0]))  # holds image (and label)
    with_context.examples.add()  # no features of its own: the context's image is used
    with_context.examples.append(tf.train.Example.FromString(serialized[1]))
    response = served["predict"].Classify(request, timeout=30)
    probabilities, _ = served["client"].predict_examples(serialized[:2])
    got = [[c.score for c in r.classes] for r in response.result.classifications]
    np.testing.assert_allclose(got, probabilities, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("signature", "examples", "message"),
    [
        (
            "predict_images",
            1,
            "Expected classification signature method_name to be tensorflow/serving/classify",
        ),
        ("classify", 0, "Input is empty"),
    ],
)
def test_classify_refuses_predict_signatures_and_empty_input(
    served, test_images, signature, examples, message
):
    _, serialized = test_images
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = signature
    request.input.example_list.examples.extend(tf.train.Example.FromString(s) for s in serialized[:examples])
    with pytest.raises(grpc.RpcError) as failure:
        served["predict"].Classify(request, timeout=30)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in failure.value.details()


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
        ("unknown label", grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: stable"),
        (
            "path as model name",
            grpc.StatusCode.NOT_FOUND,
            "model '../models/fashion_mnist' is not being served",
        ),
        ("unknown signature", grpc.StatusCode.FAILED_PRECONDITION, 'Serving signature key "nope" not found.'),
        ("float pixels", grpc.StatusCode.INVALID_ARGUMENT, "input 'images' must be DT_UINT8, got DT_FLOAT"),
        (
            "wrong image size",
            grpc.StatusCode.INVALID_ARGUMENT,
            "signature predict_images input 'images' shape is wrong, expected : [?,28,28], actual: [3,28,29]",
        ),
        (
            "missing input",
            grpc.StatusCode.INVALID_ARGUMENT,
            "Sent extra: {pixels}. Missing but required: {images}.",
        ),
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
        "unknown label": _bad(images, version_label="stable"),
        "path as model name": _bad(images, name="../models/fashion_mnist"),
        "unknown signature": _bad(images, signature_name="nope"),
        "float pixels": _bad(images, inputs={"images": tf.make_tensor_proto(images.astype(np.float32))}),
        "wrong image size": _bad(
            images, inputs={"images": tf.make_tensor_proto(np.zeros((3, 28, 29), np.uint8))}
        ),
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
    details = failure.value.details()
    assert "\n" not in details and "Graph execution" not in details and "<stack traces" not in details
    _, version = served["client"].predict_images(images[:1])  # still serving
    assert version == 1


@pytest.fixture
def rest(served):
    """TF Serving's REST API over the served fixture's runtime, on a free port; `call(path, body)`."""
    import json
    import urllib.request

    from serving.rest_server import RestServer

    server = RestServer(served["runtime"], ServingConfig(port=0), port=0)

    def call(path: str, body: dict | None = None) -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}", data=data)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    yield call
    server.stop()


def test_rest_status_and_metadata_as_tf_servings_curl_examples(rest):
    assert rest(f"/v1/models/{MODEL}") == (
        200,
        {"model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]},
    )  # fmt: skip
    status, metadata = rest(f"/v1/models/{MODEL}/versions/1/metadata")
    assert status == 200 and metadata["model_spec"] == {"name": MODEL, "signature_name": "", "version": "1"}
    signatures = metadata["metadata"]["signature_def"]["signature_def"]
    assert signatures["predict_images"]["inputs"]["images"]["dtype"] == "DT_UINT8"


def test_rest_predict_takes_b64_examples_and_raw_pixels_alike(rest, served, test_images):
    import base64

    images, serialized = test_images
    b64 = [{"b64": base64.b64encode(s).decode()} for s in serialized[:3]]
    status, by_example = rest(
        f"/v1/models/{MODEL}:predict", {"signature_name": "serving_default", "instances": b64}
    )
    assert status == 200
    body = {"signature_name": "predict_images", "instances": images[:3].tolist()}
    status, by_pixels = rest(f"/v1/models/{MODEL}/versions/1:predict", body)
    assert status == 200
    expected, _ = served["client"].predict_images(images[:3])
    np.testing.assert_allclose(by_example["predictions"], [p.probabilities for p in expected], atol=1e-6)
    assert [p["class_names"] for p in by_pixels["predictions"]] == [p.class_name for p in expected]
    np.testing.assert_allclose(
        [p["probabilities"] for p in by_pixels["predictions"]], [p.probabilities for p in expected], atol=1e-6
    )


def test_rest_classify_answers_class_names_with_scores(rest, served, test_images):
    images, serialized = test_images
    examples = [{"image": image.reshape(-1).tolist()} for image in images[:2]]
    status, answer = rest(
        f"/v1/models/{MODEL}:classify", {"signature_name": "classify", "examples": examples}
    )
    assert status == 200
    probabilities, _ = served["client"].predict_examples(serialized[:2])
    for result, expected in zip(answer["results"], probabilities, strict=True):
        assert [label for label, _ in result] == list(CLASS_NAMES)
        np.testing.assert_allclose([score for _, score in result], expected, atol=1e-6)


def test_rest_unknown_model_is_404_and_malformed_input_400(rest):
    status, answer = rest("/v1/models/shoes:predict", {"instances": [[0] * 28] * 28})
    assert status == 404 and "shoes" in answer["error"]
    status, answer = rest(
        f"/v1/models/{MODEL}:predict", {"signature_name": "predict_images", "instances": [[1, 2]]}
    )
    assert status == 400 and answer["error"]
    status, answer = rest(f"/v1/models/{MODEL}:predict", {"signature_name": "predict_images"})
    assert status == 400 and "instances" in answer["error"]


def test_hot_reload_under_concurrent_traffic_loses_no_request(served, test_images):
    images, _ = test_images
    base, store = served["base"], served["store"]
    versions, errors = [], []
    reloaded = threading.Event()

    def traffic():  # 125 requests per client at least, and on until 5 went out after the reload
        client = ServingClient(f"127.0.0.1:{served['port']}", timeout=30)
        sent = after_reload = 0
        while sent < 125 or after_reload < 5:
            sent, after_reload = sent + 1, after_reload + reloaded.is_set()
            try:
                versions.append(client.predict_images(images[:2])[1])
            except ServingError as err:
                errors.append(err)

    threads = [threading.Thread(target=traffic) for _ in range(8)]
    for t in threads:
        t.start()
    shutil.copytree(base / MODEL / "1", base / MODEL / "2")
    store.poll_once()  # loads version 2 while the traffic runs
    reloaded.set()
    for t in threads:
        t.join()
    # Every one of the >= 1,000 requests answered, and named the version that produced it.
    assert errors == [] and len(versions) >= 1000 and set(versions) == {1, 2}
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
    with pytest.raises(RequestRefusedError, match="NOT_FOUND: model 'fashion_mnist' is not being served"):
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


def test_pushed_model_carries_warmup_requests_that_replay(pipeline_runs: dict):
    from serving.version_files import read_warmup

    requests = read_warmup(pipeline_runs["first"].model.pushed_path)
    assert {r.model_spec.signature_name for r in requests} == {"predict_images", "serving_default"}


def test_a_version_whose_warmup_fails_is_not_served(served, test_images):
    from serving.version_files import WARMUP_PATH

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
    assert "must be DT_UINT8" in status[7].status.error_message
    assert served["client"].predict_images(test_images[0][:1])[1] == 1


def test_every_kind_of_served_traffic_is_logged_and_read_back(
    pipeline_runs: dict, tmp_path: Path, test_images
):
    """gRPC Predict (pixels and examples), gRPC Classify and REST predict all land in the request log."""
    import json
    import urllib.request

    from serving.request_log import read_request_logs
    from serving.server import start

    images, serialized = test_images
    base = tmp_path / "models"
    shutil.copytree(pipeline_runs["first"].model.pushed_path, base / MODEL / "3")
    config = ServingConfig(
        model_base_path=str(base), port=0, rest_api_port=0, request_log_dir=str(tmp_path / "logs")
    )
    running = start(config, rest_port=0)
    try:
        client = ServingClient(f"127.0.0.1:{running.port}", timeout=30)
        client.predict_images(images[0:2])
        client.predict_examples(serialized[2:4])
        client.classify([tf.train.Example.FromString(s) for s in serialized[4:6]])
        body = json.dumps({"signature_name": "predict_images", "instances": images[6:8].tolist()}).encode()
        url = f"http://127.0.0.1:{running.rest_port}/v1/models/{MODEL}:predict"
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=30) as response:
            assert response.status == 200
    finally:
        running.stop()
    files = sorted(str(f) for f in (tmp_path / "logs").glob("prediction_log-*.tfrecord"))
    reading = read_request_logs(files, MODEL, version=3)
    assert reading.skipped == {}
    assert len(reading.requests) == 4
    np.testing.assert_array_equal(np.concatenate([r.images for r in reading.requests]), images[:8])
    assert all(r.probabilities is not None and r.probabilities.shape == (2, 10) for r in reading.requests)


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


def test_fmnist_serve_answers_grpc_rest_and_prometheus_then_stops_cleanly_on_sigterm(
    pipeline_runs: dict, tmp_path: Path, test_images
):
    """As a new user runs it: TF Serving's flags, a monitoring config, curl-style REST calls, a scrape."""
    import json
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    import portpicker
    from prometheus_client.parser import text_string_to_metric_families

    base = tmp_path / "models"
    shutil.copytree(pipeline_runs["first"].model.pushed_path, base / MODEL / "4")
    monitoring = tmp_path / "monitoring_config.txt"
    monitoring.write_text('prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }\n')
    port, rest_port = portpicker.pick_unused_port(), portpicker.pick_unused_port()
    command = [
        str(Path(sys.executable).parent / "fmnist"), "serve", f"--model_base_path={base}", f"--port={port}",
        f"--rest_api_port={rest_port}", f"--monitoring_config_file={monitoring}",
    ]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rest = f"http://127.0.0.1:{rest_port}"
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
        with urllib.request.urlopen(f"{rest}/v1/models/{MODEL}", timeout=10) as response:
            assert json.loads(response.read())["model_version_status"][0]["state"] == "AVAILABLE"
        body = json.dumps({"signature_name": "predict_images", "instances": test_images[0][:2].tolist()})
        request = urllib.request.Request(f"{rest}/v1/models/{MODEL}:predict", data=body.encode())
        with urllib.request.urlopen(request, timeout=30) as response:
            assert len(json.loads(response.read())["predictions"]) == 2
        client.predict_images(test_images[0][:1])
        with urllib.request.urlopen(f"{rest}/monitoring/prometheus/metrics", timeout=10) as response:
            families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
        counts = {
            s.labels["status"]: s.value
            for s in families[":tensorflow:serving:request_count"].samples
            if s.name.endswith("_total") and s.labels["model_name"] == MODEL
        }
        assert counts["OK"] >= 3  # GetModelStatus over REST, REST predict, gRPC predict
        latency = families[":tensorflow:serving:request_latency"].samples
        entrypoints = {s.labels["entrypoint"] for s in latency if s.name.endswith("_count") and s.value}
        assert entrypoints == {"GRPC", "REST"}
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=60)  # reads while waiting: a full pipe would block the server
        assert server.returncode == 0
        assert f"gRPC on 127.0.0.1:{port}, REST on 127.0.0.1:{rest_port}" in output
    finally:
        server.kill()


def _write_config(path: Path, base: Path, policy: str, labels: dict[str, int]) -> Path:
    label_text = "".join(f'    version_labels {{ key: "{k}" value: {v} }}\n' for k, v in labels.items())
    path.write_text(
        "model_config_list {\n  config {\n"
        f'    name: "{MODEL}"\n    base_path: "{base / MODEL}"\n    model_platform: "tensorflow"\n'
        f"    model_version_policy {{ {policy} }}\n{label_text}  }}\n}}\n"
    )
    return path


def test_models_config_serves_specific_versions_and_labels(pipeline_runs: dict, tmp_path: Path, test_images):
    images, _ = test_images
    base = tmp_path / "models"
    for version in (1, 2, 3):
        shutil.copytree(pipeline_runs["first"].model.pushed_path, base / MODEL / str(version))
    config = _write_config(
        tmp_path / "models.config", base, "specific { versions: 1 versions: 3 }", {"stable": 1, "canary": 3}
    )
    store = make_manager(ServingConfig(model_config_file=str(config), poll_seconds=3600))
    store.poll_once()
    server, port, _ = build_server(store, ServingConfig(port=0, canary_percent=100))
    server.start()
    client = ServingClient(f"127.0.0.1:{port}", timeout=30)
    try:
        states = {s.version: s.state for s in client.status(MODEL).model_version_status}
        assert states == {1: AVAILABLE, 3: AVAILABLE}  # version 2 is not in the policy
        assert client.predict_images(images[:1])[1] == 3  # no version asked, all to the canary: the newest
        assert client.predict_images(images[:1], label="stable")[1] == 1
        assert client.predict_images(images[:1], label="canary")[1] == 3
        assert client.predict_images(images[:1], version=1)[1] == 1
        with pytest.raises(RequestRefusedError, match="NOT_FOUND: .*version 2 is not available"):
            client.predict_images(images[:1], version=2)
        with pytest.raises(
            RequestRefusedError, match="INVALID_ARGUMENT: Unrecognized servable version label: beta"
        ):
            client.predict_images(images[:1], label="beta")
    finally:
        client.close()
        server.stop(grace=None)


def test_models_config_latest_policy_keeps_the_newest_n(pipeline_runs: dict, tmp_path: Path):
    base = tmp_path / "models"
    for version in (4, 5, 6):
        shutil.copytree(pipeline_runs["first"].model.pushed_path, base / MODEL / str(version))
    config = _write_config(tmp_path / "models.config", base, "latest { num_versions: 2 }", {})
    store = make_manager(ServingConfig(model_config_file=str(config), poll_seconds=3600))
    store.poll_once()
    assert {v: s.state for v, s in store.status(MODEL).items()} == {5: "AVAILABLE", 6: "AVAILABLE"}
    assert store.resolve(MODEL).version == 6


def test_fmnist_serve_with_a_bad_config_exits_2_naming_the_file(tmp_path: Path, capsys):
    from cli.main import main

    missing = tmp_path / "nowhere.config"
    assert main(["serve", "--model-config-file", str(missing), "--port", "0"]) == 2
    assert f"{missing}: cannot read the model config" in capsys.readouterr().err


def test_serving_check_passes_a_good_model_and_names_what_breaks_a_bad_one(
    pipeline_runs: dict, tmp_path: Path, test_images
):
    from tensorflow.core.protobuf import saved_model_pb2

    from components.serving_check import check_model_serves
    from core.vocabulary import CLASSIFY_METHOD

    _, serialized = test_images
    pushed = Path(pipeline_runs["first"].model.pushed_path)
    assert check_model_serves(str(pushed), serialized) == []

    corrupt = tmp_path / "corrupt"
    shutil.copytree(pushed, corrupt)
    (corrupt / "saved_model.pb").write_bytes(b"not a SavedModel")
    assert check_model_serves(str(corrupt), serialized)[0].startswith("the model does not load:")

    no_classify = tmp_path / "no_classify"  # loads and predicts, but Classify would fail in TF Serving
    shutil.copytree(pushed, no_classify)
    saved_model = saved_model_pb2.SavedModel.FromString((no_classify / "saved_model.pb").read_bytes())
    signature = saved_model.meta_graphs[0].signature_def["classify"]
    assert signature.method_name == CLASSIFY_METHOD
    signature.method_name = "tensorflow/serving/predict"
    (no_classify / "saved_model.pb").write_bytes(saved_model.SerializeToString())
    problems = check_model_serves(str(no_classify), serialized)
    assert len(problems) == 1 and "INVALID_ARGUMENT: Expected classification signature" in problems[0]

    assert check_model_serves(str(tmp_path / "empty"), serialized) == [
        f"the model does not load: no saved_model.pb in {tmp_path / 'empty'}"
    ]
