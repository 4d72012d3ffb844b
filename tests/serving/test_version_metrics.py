"""Per-version metrics (canary against stable on one page), and model-name labels no client can inflate."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving.metrics import UNSERVED, ServingMetrics
from serving.servable import InvalidRequestError
from serving.server import start
from serving.tensors import proto_from_array
from tests.serving.canary_models import MODEL, build_rollout, serving_config

COUNT = "fmnist_version_request_count_total"
LATENCY_COUNT = "fmnist_version_request_latency_count"


def samples(page: bytes | str, name: str) -> list:
    text = page.decode() if isinstance(page, bytes) else page
    return [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]


def by_labels(page, name: str, *keys: str) -> dict[tuple, float]:
    return {tuple(s.labels[k] for k in keys): s.value for s in samples(page, name)}


def test_names_of_models_not_served_share_one_series():
    metrics = ServingMetrics(serves=lambda name: name == MODEL)
    for i in range(50):
        with metrics.request(f"random-{i}", "Predict", "GRPC") as outcome:
            outcome["status"] = "NOT_FOUND"
    with metrics.request(MODEL, "Predict", "GRPC") as outcome:
        outcome["status"] = "INVALID_ARGUMENT"  # a served model keeps its name, failing or not
    with metrics.request("upstream_model", "Predict", "GRPC"):
        pass  # answered OK: served (by a proxy's upstream), so named from now on
    with metrics.request("upstream_model", "Predict", "GRPC") as outcome:
        outcome["status"] = "INVALID_ARGUMENT"
    counts = by_labels(metrics.page(), ":tensorflow:serving:request_count_total", "model_name", "status")
    assert counts == {
        (UNSERVED, "NOT_FOUND"): 50,
        (MODEL, "INVALID_ARGUMENT"): 1,
        ("upstream_model", "OK"): 1,
        ("upstream_model", "INVALID_ARGUMENT"): 1,
    }


def test_a_version_counts_its_answers_by_status_and_its_series_go_when_it_is_unloaded():
    metrics = ServingMetrics()
    with metrics.answering(MODEL, 7, "canary", "Predict"):
        pass
    with pytest.raises(InvalidRequestError), metrics.answering(MODEL, 7, "canary", "Predict"):
        raise InvalidRequestError("bad shape")
    with pytest.raises(RuntimeError), metrics.answering(MODEL, 7, "canary", "Classify"):
        raise RuntimeError("a bug")
    with metrics.answering(MODEL, 6, "stable", "Predict"):
        pass
    counts = by_labels(metrics.page(), COUNT, "version", "label", "status")
    assert counts == {
        ("7", "canary", "OK"): 1,
        ("7", "canary", "INVALID_ARGUMENT"): 1,
        ("7", "canary", "INTERNAL"): 1,
        ("6", "stable", "OK"): 1,
    }
    assert by_labels(metrics.page(), LATENCY_COUNT, "version", "API") == {
        ("7", "Predict"): 1,
        ("6", "Predict"): 1,
    }
    metrics.observe_version(MODEL, 7, "/models/7", "UNLOADED")
    assert set(by_labels(metrics.page(), COUNT, "version")) == {("6",)}
    assert set(by_labels(metrics.page(), LATENCY_COUNT, "version")) == {("6",)}


def predict(stub, label: str | None = None, image: np.ndarray | None = None, name: str = MODEL) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = "predict_images"
    if label:
        request.model_spec.version_label = label
    image = np.zeros((1, 28, 28), np.uint8) if image is None else image
    request.inputs["images"].CopyFrom(proto_from_array(image))
    stub.Predict(request, timeout=30)


def test_the_page_compares_canary_and_stable_and_keeps_tf_servings_names(tmp_path: Path):
    config = serving_config(tmp_path, build_rollout(tmp_path), canary_percent=50)
    running = start(config, rest_port=0)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for _ in range(5):
            predict(stub, "stable")
        for _ in range(3):
            predict(stub, "canary")
        with pytest.raises(grpc.RpcError) as refused:
            predict(stub, "canary", image=np.zeros((1, 28, 27), np.uint8))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        for i in range(20):
            with pytest.raises(grpc.RpcError):
                predict(stub, name=f"no-such-model-{i}")
        url = f"http://127.0.0.1:{running.rest_port}/monitoring/prometheus/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            page = response.read()
    finally:
        channel.close()
        running.stop()
    keys = ("model_name", "version", "label", "status")
    assert by_labels(page, COUNT, *keys) == {
        (MODEL, "1", "stable", "OK"): 5,
        (MODEL, "2", "canary", "OK"): 3,
        (MODEL, "2", "canary", "INVALID_ARGUMENT"): 1,
    }
    latency = by_labels(page, LATENCY_COUNT, "version", "label", "API")
    assert latency == {("1", "stable", "Predict"): 5, ("2", "canary", "Predict"): 3}
    tf_serving = by_labels(page, ":tensorflow:serving:request_count_total", "model_name", "status")
    assert tf_serving == {(MODEL, "OK"): 8, (MODEL, "INVALID_ARGUMENT"): 1, (UNSERVED, "NOT_FOUND"): 20}
