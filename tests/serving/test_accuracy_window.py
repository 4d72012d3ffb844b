"""Each version's label-free accuracy estimate over its newest answers, as Prometheus gauges."""

from __future__ import annotations

import logging
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from core.accuracy_estimate import FORMAT_VERSION, estimator_path, fit, load_estimator, save_estimator
from serving.accuracy_window import AccuracyWindows
from serving.server import start
from serving.tensors import proto_from_array
from tests.serving.canary_models import CANARY, MODEL, STABLE, build_rollout, held_out, serving_config
from tests.serving.test_version_metrics import by_labels

GAUGE_NAMES = ("value", "low", "high", "images")
GAUGES = dict(
    zip(
        GAUGE_NAMES,
        (
            "fmnist_estimated_accuracy",
            "fmnist_estimated_accuracy_low",
            "fmnist_estimated_accuracy_high",
            "fmnist_estimated_accuracy_images",
        ),
        strict=True,
    )
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def gauges(collector) -> dict[tuple[str, str, str], dict[str, float]]:
    """(model, version, label) -> {value, low, high, images}, from one collection."""
    found: dict = {}
    for family in collector.collect():
        short = {v: k for k, v in GAUGES.items()}[family.name]
        for sample in family.samples:
            key = (sample.labels["model_name"], sample.labels["version"], sample.labels["label"])
            found.setdefault(key, {})[short] = sample.value
    return found


@pytest.fixture
def version_dir(tmp_path: Path) -> Path:
    """A version directory with an estimator fitted on held-out answers."""
    save_estimator(fit(*held_out()), estimator_path(str(tmp_path / "2")))
    return tmp_path / "2"


def answers(n: int, seed: int) -> np.ndarray:
    return held_out(n, seed)[0].astype(np.float32)


def test_the_window_keeps_the_newest_answers_and_exports_their_estimate(version_dir: Path):
    windows = AccuracyWindows(100, labels=lambda model: {"canary": 2}, clock=Clock())
    windows.observe_version(MODEL, 2, str(version_dir), "AVAILABLE")
    batches = [answers(n, seed) for seed, n in enumerate((40, 40, 40, 1, 30))]
    for batch in batches:
        windows.add(MODEL, 2, batch)
    newest = np.concatenate(batches)[-100:]
    expected = load_estimator(estimator_path(str(version_dir))).estimate(newest)
    exported = gauges(windows)[(MODEL, "2", "canary")]
    assert exported == pytest.approx(
        {"value": expected.value, "low": expected.low, "high": expected.high, "images": 100}
    )
    windows.add(MODEL, 2, answers(500, 9))  # one request larger than the window: its newest 100
    windows.clock.now = 10
    expected = load_estimator(estimator_path(str(version_dir))).estimate(answers(500, 9)[-100:])
    assert gauges(windows)[(MODEL, "2", "canary")]["value"] == pytest.approx(expected.value)


def test_the_estimate_is_recomputed_at_most_every_few_seconds(version_dir: Path):
    clock = Clock()
    windows = AccuracyWindows(1000, labels=lambda model: {}, refresh_seconds=5.0, clock=clock)
    windows.observe_version(MODEL, 2, str(version_dir), "AVAILABLE")
    windows.add(MODEL, 2, answers(200, 1))
    first = gauges(windows)[(MODEL, "2", "")]
    windows.add(MODEL, 2, answers(200, 2))
    clock.now = 4.0
    assert gauges(windows)[(MODEL, "2", "")] == first  # too soon: the last estimate
    clock.now = 5.0
    assert gauges(windows)[(MODEL, "2", "")]["images"] == 400


def test_a_version_without_an_estimator_exports_nothing_and_says_so_once(tmp_path: Path, caplog):
    windows = AccuracyWindows(100, labels=lambda model: {})
    with caplog.at_level(logging.WARNING, logger="serving.accuracy_window"):
        windows.observe_version(MODEL, 1, str(tmp_path / "1"), "AVAILABLE")
        for _ in range(5):
            windows.add(MODEL, 1, answers(10, 0))
        assert gauges(windows) == {}
    (line,) = (r.getMessage() for r in caplog.records)
    assert f"model {MODEL} version 1" in line and "no accuracy estimator" in line


def test_a_version_with_an_outdated_estimator_exports_nothing_and_says_why(version_dir: Path, caplog):
    path = Path(estimator_path(str(version_dir)))
    path.write_text(path.read_text().replace(f'"format_version": {FORMAT_VERSION}', '"format_version": 1'))
    windows = AccuracyWindows(100, labels=lambda model: {})
    with caplog.at_level(logging.WARNING, logger="serving.accuracy_window"):
        windows.observe_version(MODEL, 2, str(version_dir), "AVAILABLE")
        windows.add(MODEL, 2, answers(10, 0))
        assert gauges(windows) == {}
    (line,) = (r.getMessage() for r in caplog.records)
    assert f"model {MODEL} version 2" in line and "accuracy estimator format 1; this code reads" in line


def test_answers_that_are_not_probabilities_are_not_kept(version_dir: Path, caplog):
    windows = AccuracyWindows(100, labels=lambda model: {})
    windows.observe_version(MODEL, 2, str(version_dir), "AVAILABLE")
    with caplog.at_level(logging.WARNING, logger="serving.accuracy_window"):
        for _ in range(3):
            windows.add(MODEL, 2, np.full((4, 10), 3.0, np.float32))  # logits, not probabilities
            windows.add(MODEL, 2, np.full((4, 1), 1.0, np.float32))  # another model's outputs
    assert gauges(windows) == {}
    assert len(caplog.records) == 1 and "answers no probabilities" in caplog.records[0].getMessage()
    windows.add(MODEL, 2, answers(10, 0))
    assert gauges(windows)[(MODEL, "2", "")]["images"] == 10


def test_an_unloaded_version_leaves_the_page(version_dir: Path):
    windows = AccuracyWindows(100, labels=lambda model: {})
    windows.observe_version(MODEL, 2, str(version_dir), "AVAILABLE")
    windows.add(MODEL, 2, answers(10, 0))
    windows.observe_version(MODEL, 2, str(version_dir), "UNLOADED")
    assert gauges(windows) == {}


# --- on a running server ---------------------------------------------------------------------------------
def predict(stub, label: str, images: np.ndarray) -> np.ndarray:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = "predict_images"
    request.model_spec.version_label = label
    request.inputs["images"].CopyFrom(proto_from_array(images))
    return tf.make_ndarray(stub.Predict(request, timeout=30).outputs["probabilities"])


def scrape(running) -> bytes:
    url = f"http://127.0.0.1:{running.rest_port}/monitoring/prometheus/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def test_fmnist_serve_exports_the_estimate_of_each_version_that_has_an_estimator(tmp_path: Path, caplog):
    config = serving_config(tmp_path, build_rollout(tmp_path), estimate_window=50)
    generator = np.random.default_rng(0)
    with caplog.at_level(logging.WARNING, logger="serving.accuracy_window"):
        running = start(config, rest_port=0)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        answered = [
            predict(stub, "canary", generator.integers(0, 256, (4, 28, 28), np.uint8)) for _ in range(20)
        ]
        predict(stub, "stable", generator.integers(0, 256, (4, 28, 28), np.uint8))
        page = scrape(running)
    finally:
        channel.close()
        running.stop()
    keys = ("model_name", "version", "label")
    estimator = load_estimator(estimator_path(str(tmp_path / "models" / MODEL / str(CANARY))))
    expected = estimator.estimate(np.concatenate(answered)[-50:])
    for name in GAUGES.values():
        assert set(by_labels(page, name, *keys)) == {(MODEL, str(CANARY), "canary")}, name  # not version 1
    figures = {
        short: by_labels(page, name, *keys)[(MODEL, str(CANARY), "canary")] for short, name in GAUGES.items()
    }
    assert figures == pytest.approx(
        {"value": expected.value, "low": expected.low, "high": expected.high, "images": 50}
    )
    said = [r.getMessage() for r in caplog.records if "no accuracy estimator" in r.getMessage()]
    assert len(said) == 1 and f"version {STABLE}" in said[0]


def test_without_request_logging_no_estimate_is_kept(tmp_path: Path):
    config = serving_config(tmp_path, build_rollout(tmp_path), estimate_window=50)
    config = type(config)(**{**vars(config), "request_log_dir": ""})
    running = start(config, rest_port=0)
    try:
        assert running.runtime.estimates is None
        assert "fmnist_estimated_accuracy" not in scrape(running).decode()
    finally:
        running.stop()
