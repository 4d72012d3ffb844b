"""The request-logging proxy before a TF Serving server: transparent; its logs feed the drift report."""

import contextlib
import shutil
import time
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import portpicker
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from core.config import ServingConfig
from core.errors import ServingError
from monitoring.batches import load_batch
from serving.client import RequestRefusedError, ServingClient
from serving.log_proxy import build_proxy
from serving.model_config import ModelConfigError
from serving.request_log import read_request_logs
from serving.server import build_server
from serving.version_manager import VersionManager
from tests.serving.test_version_metrics import COUNT, by_labels


@pytest.mark.e2e  # serves the model a slice run pushed
def test_the_proxy_forwards_every_rpc_and_logs_predict(pipeline_runs: dict, slice_data: Path, tmp_path: Path):
    base = tmp_path / "models"
    shutil.copytree(pipeline_runs["first"].model.pushed_path, base / "fashion_mnist" / "5")
    store = VersionManager(str(base), poll_seconds=3600)
    store.poll_once()
    upstream, upstream_port, _ = build_server(store, ServingConfig(model_base_path=str(base), port=0))
    upstream.start()
    proxy, proxy_port, logger, _ = build_proxy(
        f"127.0.0.1:{upstream_port}", str(tmp_path / "logs"), ServingConfig(port=0)
    )
    proxy.start()
    images = load_batch(str(slice_data / "test")).images[:60]
    try:
        direct = ServingClient(f"127.0.0.1:{upstream_port}", timeout=30)
        through = ServingClient(f"127.0.0.1:{proxy_port}", timeout=30)
        for start in range(0, 60, 20):
            via_proxy, version = through.predict_images(images[start : start + 20])
            expected, _ = direct.predict_images(images[start : start + 20])
            assert version == 5
            np.testing.assert_allclose(
                [p.probabilities for p in via_proxy], [p.probabilities for p in expected]
            )
        states = [s.state for s in through.status().model_version_status]
        assert states == [get_model_status_pb2.ModelVersionStatus.AVAILABLE]
        assert set(through.metadata().signature_def) == {"serving_default", "predict_images", "classify"}
        with pytest.raises(RequestRefusedError, match="NOT_FOUND: model 'shoes' is not being served"):
            through.predict_images(images[:1], model="shoes")  # the upstream's status and message
    finally:
        proxy.stop(grace=None)
        upstream.stop(grace=None)
        logger.close()
    logged = load_batch(str(tmp_path / "logs"))
    np.testing.assert_array_equal(logged.images, images)  # the failed request was not logged
    assert logged.probabilities.shape == (60, 10)


def test_the_proxy_reports_an_unreachable_upstream(tmp_path: Path):
    proxy, port, logger, _ = build_proxy(
        "127.0.0.1:1", str(tmp_path / "logs"), ServingConfig(port=0), timeout=2
    )
    proxy.start()
    try:
        client = ServingClient(f"127.0.0.1:{port}", timeout=10, retries=0)
        with pytest.raises(ServingError) as failure:
            client.predict_images(np.zeros((1, 28, 28), np.uint8))
        assert failure.value.__cause__.code() in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
        )
    finally:
        proxy.stop(grace=None)
        logger.close()


class SlowUpstream(
    prediction_service_pb2_grpc.PredictionServiceServicer, model_service_pb2_grpc.ModelServiceServicer
):
    """A TF Serving stand-in whose Predict takes 20 s unless cancelled; status answers at once."""

    def __init__(self) -> None:
        self.cancelled = []

    def Predict(self, request, context):
        started = time.monotonic()
        while context.is_active() and time.monotonic() - started < 20:
            time.sleep(0.02)
        self.cancelled.append(time.monotonic() - started)
        return predict_pb2.PredictResponse()

    def GetModelStatus(self, request, context):
        response = get_model_status_pb2.GetModelStatusResponse()
        response.model_version_status.add(version=1, state=get_model_status_pb2.ModelVersionStatus.AVAILABLE)
        return response


def start_upstream(port: int) -> tuple[grpc.Server, SlowUpstream]:
    upstream = SlowUpstream()
    server = grpc.server(futures.ThreadPoolExecutor(16))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(upstream, server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(upstream, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server, upstream


def status_request() -> get_model_status_pb2.GetModelStatusRequest:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "m"
    return request


def test_cancelled_calls_are_cancelled_upstream_and_do_not_starve_the_proxy(tmp_path: Path):
    upstream_port = portpicker.pick_unused_port()
    upstream, slow = start_upstream(upstream_port)
    proxy, port, logger, _ = build_proxy(
        f"127.0.0.1:{upstream_port}", str(tmp_path / "logs"), ServingConfig(port=0, workers=4)
    )
    proxy.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            predict = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = predict_pb2.PredictRequest()
            request.inputs["images"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 28, 28), np.uint8)))
            calls = [predict.Predict.future(request) for _ in range(4)]  # no deadline: every proxy worker
            time.sleep(0.5)
            for call in calls:
                call.cancel()
            deadline = time.monotonic() + 5
            while len(slow.cancelled) < 4 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(slow.cancelled) == 4 and max(slow.cancelled) < 3  # cancelled upstream, not after 20 s
            status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
                status_request(), timeout=2
            )
            assert status.model_version_status[0].version == 1  # the workers are free again
            with pytest.raises(grpc.RpcError) as expired:  # a client's deadline travels upstream too
                predict.Predict(request, timeout=0.5)
            assert expired.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        proxy.stop(grace=None)
        upstream.stop(grace=None)
        logger.close()


def test_after_an_upstream_outage_the_proxy_reconnects_within_seconds(tmp_path: Path):
    upstream_port = portpicker.pick_unused_port()
    upstream, _ = start_upstream(upstream_port)
    proxy, port, logger, _ = build_proxy(
        f"127.0.0.1:{upstream_port}", str(tmp_path / "logs"), ServingConfig(port=0)
    )
    proxy.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            models = model_service_pb2_grpc.ModelServiceStub(channel)
            models.GetModelStatus(status_request(), timeout=5)
            upstream.stop(grace=None).wait()
            outage = time.monotonic()
            while time.monotonic() - outage < 6:  # gRPC's default backoff (1 s x 1.6^n) would grow past 3 s
                with pytest.raises(grpc.RpcError) as down:
                    models.GetModelStatus(status_request(), timeout=5)
                assert down.value.code() == grpc.StatusCode.UNAVAILABLE
                time.sleep(0.3)
            upstream, _ = start_upstream(upstream_port)
            back = time.monotonic()
            while True:
                try:
                    models.GetModelStatus(status_request(), timeout=5)
                    break
                except grpc.RpcError:
                    assert time.monotonic() - back < 1.8, "the proxy did not reconnect within 1.8 s"
                    time.sleep(0.1)
    finally:
        proxy.stop(grace=None)
        upstream.stop(grace=None)
        logger.close()


# --- the traffic split in front of a TF Serving that has none ------------------------------------------
class LabelledUpstream(prediction_service_pb2_grpc.PredictionServiceServicer):
    """TF Serving's label rules on a fake: stable 1, canary 2, no version asked: 2 (the newest).

    `known` is the labels TF Serving has applied: one it has not is refused with its message.
    """

    def __init__(self, known=("stable", "canary")) -> None:
        self.known = set(known)
        self.asked: list[str] = []  # per call: the label, the version, or "" (none)

    def Predict(self, request, context):
        spec = request.model_spec
        choice = spec.WhichOneof("version_choice")
        self.asked.append(spec.version_label if choice == "version_label" else str(spec.version.value or ""))
        if choice == "version_label" and spec.version_label not in self.known:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"Unrecognized servable version label: {spec.version_label}"
            )
        if choice == "version" and spec.version.value not in (1, 2):
            context.abort(
                grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Specific({spec.version.value})"
            )
        version = {"stable": 1, "canary": 2}.get(spec.version_label) if choice == "version_label" else None
        response = predict_pb2.PredictResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = version or spec.version.value or 2
        response.outputs["probabilities"].CopyFrom(tf.make_tensor_proto(np.full((1, 10), 0.1, np.float32)))
        return response


def labelled_proxy(tmp_path: Path, upstream: LabelledUpstream, with_labels: bool = True, **config):
    """A proxy before `upstream`, given the rollout's models.config (stable 1, canary 2) `with_labels`."""
    port = portpicker.pick_unused_port()
    server = grpc.server(futures.ThreadPoolExecutor(8))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(upstream, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    models_config = tmp_path / "models.config"
    models_config.write_text(
        'model_config_list { config { name: "fashion_mnist" base_path: "/models/fashion_mnist" '
        'version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 2 } } }\n'
    )
    labels = str(models_config) if with_labels else ""
    proxy_config = ServingConfig(port=0, model_config_file=labels, **config)
    proxy, proxy_port, logger, backend = build_proxy(
        f"127.0.0.1:{port}", str(tmp_path / "logs"), proxy_config
    )
    proxy.start()
    return server, proxy, logger, backend, grpc.insecure_channel(f"127.0.0.1:{proxy_port}")


def proxied_predict(stub, client_id=None, label=None) -> int:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "fashion_mnist"
    if label:
        request.model_spec.version_label = label
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 28, 28), np.uint8)))
    metadata = [("x-client-id", client_id)] if client_id else None
    return stub.Predict(request, timeout=10, metadata=metadata).model_spec.version.value


def test_the_proxy_splits_by_setting_the_version_label_and_logs_the_answering_version(tmp_path: Path):
    upstream = LabelledUpstream()
    server, proxy, logger, backend, channel = labelled_proxy(tmp_path, upstream, canary_percent=30)
    try:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        clients = {f"user-{i}": proxied_predict(stub, f"user-{i}") for i in range(200)}
        assert 0.2 < list(clients.values()).count(2) / 200 < 0.4
        assert all(proxied_predict(stub, c) == v for c, v in list(clients.items())[:40])  # sticky
        assert set(upstream.asked) == {"stable", "canary"}  # every request named no version: all routed
        assert proxied_predict(stub, "user-0", label="canary") == 2  # a label the client named goes through
    finally:
        channel.close()
        proxy.stop(grace=None)
        server.stop(grace=None)
        logger.close()
    logged = read_request_logs([str(p) for p in (tmp_path / "logs").iterdir()])
    answered = [*clients.values(), *[clients[f"user-{i}"] for i in range(40)], 2]
    assert sorted(r.version for r in logged.requests) == sorted(answered)
    counts = by_labels(backend.metrics.page(), COUNT, "version", "label", "status")  # per version, as served
    assert counts == {("1", "stable", "OK"): answered.count(1), ("2", "canary", "OK"): answered.count(2)}


def test_a_label_tf_serving_does_not_know_yet_is_retried_as_the_client_sent_it(tmp_path: Path):
    upstream = LabelledUpstream(known=["stable"])  # the canary's version is still loading upstream
    server, proxy, logger, _, channel = labelled_proxy(tmp_path, upstream, canary_percent=100)
    try:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        assert proxied_predict(stub, "user-1") == 2  # answered by TF Serving's own rule
        assert upstream.asked == ["canary", ""]
        with pytest.raises(grpc.RpcError, match="Unrecognized servable version label: canary"):
            proxied_predict(stub, "user-1", label="canary")  # the client's own label: its answer stands
    finally:
        channel.close()
        proxy.stop(grace=None)
        server.stop(grace=None)
        logger.close()


def test_without_a_models_config_the_proxy_forwards_requests_as_sent(tmp_path: Path):
    upstream = LabelledUpstream()
    server, proxy, logger, _, channel = labelled_proxy(
        tmp_path, upstream, with_labels=False, canary_percent=50
    )
    try:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        assert {proxied_predict(stub, f"u{i}") for i in range(20)} == {2}
        assert set(upstream.asked) == {""}
    finally:
        channel.close()
        proxy.stop(grace=None)
        server.stop(grace=None)
        logger.close()


def test_refused_requests_count_for_served_versions_only(tmp_path: Path):
    upstream = LabelledUpstream()
    server, proxy, logger, backend, channel = labelled_proxy(tmp_path, upstream, canary_percent=0)
    try:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "fashion_mnist"
        request.inputs["images"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 28, 28), np.uint8)))
        for version in [*range(1000, 1030), 1]:
            request.model_spec.version.value = version
            with contextlib.suppress(grpc.RpcError):
                stub.Predict(request, timeout=10)
    finally:
        channel.close()
        proxy.stop(grace=None)
        server.stop(grace=None)
        logger.close()
    counts = by_labels(backend.metrics.page(), COUNT, "version", "label", "status")
    assert counts == {("1", "stable", "OK"): 1}  # no series for the 30 versions TF Serving does not have


def test_a_bad_models_config_stops_the_proxy_at_start_naming_it(tmp_path: Path):
    bad = tmp_path / "models.config"
    bad.write_text("model_config_list { config { name: ")
    with pytest.raises(ModelConfigError, match=str(bad)):
        build_proxy("127.0.0.1:1", str(tmp_path / "logs"), ServingConfig(port=0, model_config_file=str(bad)))
