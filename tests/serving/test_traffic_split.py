"""The traffic split: a share of the requests naming no version to the canary, sticky per client."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_service_pb2_grpc

from serving.request_log import read_request_logs
from serving.server import start
from serving.tensors import proto_from_array
from serving.traffic_split import CANARY, STABLE, TrafficSplit, client_key, label_of
from tests.serving.canary_models import (
    CANARY as CANARY_VERSION,
)
from tests.serving.canary_models import (
    MODEL,
    build_rollout,
    serving_config,
    write_models_config,
)
from tests.serving.canary_models import (
    STABLE as STABLE_VERSION,
)

LABELS = {STABLE: 1, CANARY: 2}
IMAGE = np.random.default_rng(0).integers(0, 256, (1, 28, 28), dtype=np.uint8)


# --- the rule, as a table ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("labels", "client_id", "expected"),
    [
        ({}, None, None),  # no labels: TF Serving's rule
        ({STABLE: 3}, "a", None),  # no canary
        ({STABLE: 3, CANARY: 3}, "a", None),  # the canary is the stable version: nothing to split
        ({CANARY: 3}, "a", None),  # no stable to send the rest to
    ],
)
def test_without_a_distinct_canary_nothing_is_routed(labels, client_id, expected):
    assert TrafficSplit(50).label_for(MODEL, labels, client_id) is expected


def test_the_share_decides_and_a_client_id_sticks():
    assert {TrafficSplit(0).label_for(MODEL, LABELS, f"c{i}") for i in range(200)} == {STABLE}
    assert {TrafficSplit(100).label_for(MODEL, LABELS, f"c{i}") for i in range(200)} == {CANARY}
    split = TrafficSplit(20)
    chosen = [split.label_for(MODEL, LABELS, f"client-{i}") for i in range(2000)]
    assert 0.17 < chosen.count(CANARY) / 2000 < 0.23
    assert chosen == [split.label_for(MODEL, LABELS, f"client-{i}") for i in range(2000)]  # sticky


def test_raising_the_share_only_adds_clients_to_the_canary():
    ids = [f"client-{i}" for i in range(500)]
    at = {p: {i for i in ids if TrafficSplit(p).label_for(MODEL, LABELS, i) == CANARY} for p in (5, 20, 50)}
    assert at[5] <= at[20] <= at[50] and len(at[5]) < len(at[20]) < len(at[50])


def test_a_new_canary_draws_other_clients_and_keys_are_the_same_in_every_process():
    ids = [f"client-{i}" for i in range(1000)]
    first = {i for i in ids if client_key(MODEL, 2, i) < 0.1}
    second = {i for i in ids if client_key(MODEL, 3, i) < 0.1}
    assert len(first & second) < 0.3 * len(first)
    assert client_key("fashion_mnist", 2, "client-0") == pytest.approx(
        0.21137, abs=1e-5
    )  # sha256, not hash()


def test_without_a_client_id_each_request_draws():
    draws = iter([0.05, 0.5, 0.09, 0.11])
    split = TrafficSplit(10, draw=lambda: next(draws))
    assert [split.label_for(MODEL, LABELS, None) for _ in range(4)] == [CANARY, STABLE, CANARY, STABLE]


def test_a_spec_naming_a_version_or_a_label_is_never_routed():
    split = TrafficSplit(100)
    named = [model_pb2.ModelSpec(name=MODEL, version_label=STABLE), model_pb2.ModelSpec(name=MODEL)]
    named[1].version.value = 1
    assert all(split.route(spec, LABELS, "a") is spec for spec in named)
    routed = split.route(model_pb2.ModelSpec(name=MODEL, signature_name="s"), LABELS, "a")
    assert (routed.version_label, routed.signature_name) == (CANARY, "s")


def test_a_version_goes_by_stable_before_canary():
    assert label_of({STABLE: 1, CANARY: 1}, 1) == STABLE
    assert label_of({STABLE: 1, CANARY: 2}, 2) == CANARY
    assert label_of({STABLE: 1, CANARY: 2}, 5) == ""


# --- on a running server ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rollout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rollout")
    build_rollout(root)
    return root


@pytest.fixture(scope="module")
def server(rollout: Path):
    running = start(serving_config(rollout, rollout / "models.config", canary_percent=25), rest_port=0)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    yield running, prediction_service_pb2_grpc.PredictionServiceStub(channel)
    channel.close()
    running.stop()


def predict(stub, client_id: str | None = None, version: int | None = None, label: str | None = None) -> int:
    """The version that answered a Predict of one image."""
    return answer(stub, client_id, version, label)[0]


def answer(stub, client_id=None, version=None, label=None) -> tuple[int, np.ndarray]:
    """The version that answered and its probabilities."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = "predict_images"
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    request.inputs["images"].CopyFrom(proto_from_array(IMAGE))
    metadata = [("x-client-id", client_id)] if client_id else None
    response = stub.Predict(request, timeout=30, metadata=metadata)
    return response.model_spec.version.value, tf.make_ndarray(response.outputs["probabilities"])


def test_requests_naming_no_version_are_split_and_each_client_stays_on_one_version(server):
    _, stub = server
    anonymous = [predict(stub) for _ in range(300)]
    assert set(anonymous) == {STABLE_VERSION, CANARY_VERSION}
    assert 0.15 < anonymous.count(CANARY_VERSION) / 300 < 0.35  # 25 %, sd 2.5 points
    clients = {f"user-{i}": predict(stub, f"user-{i}") for i in range(200)}
    assert 0.15 < list(clients.values()).count(CANARY_VERSION) / 200 < 0.35
    assert all(predict(stub, client) == version for client, version in list(clients.items())[:50])


def test_a_version_or_a_label_gets_exactly_that(server):
    _, stub = server
    assert {predict(stub, f"u{i}", label="stable") for i in range(30)} == {STABLE_VERSION}
    assert {predict(stub, f"u{i}", label="canary") for i in range(30)} == {CANARY_VERSION}
    assert {predict(stub, f"u{i}", version=1) for i in range(30)} == {STABLE_VERSION}


def test_rest_splits_by_the_x_client_id_header_as_grpc_does(server):
    """TF Serving's REST answer names no version: the two versions' different weights tell them apart."""
    running, stub = server
    expected = {v: answer(stub, version=v)[1] for v in (STABLE_VERSION, CANARY_VERSION)}
    assert not np.allclose(expected[STABLE_VERSION], expected[CANARY_VERSION])
    body = json.dumps({"signature_name": "predict_images", "instances": IMAGE.tolist()}).encode()
    url = f"http://127.0.0.1:{running.rest_port}/v1/models/{MODEL}:predict"
    seen = set()
    for i in range(40):
        request = urllib.request.Request(url, data=body, headers={"X-Client-Id": f"user-{i}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            probabilities = json.loads(response.read())["predictions"][0]["probabilities"]
        version = predict(stub, f"user-{i}")  # the same client over gRPC
        np.testing.assert_allclose(probabilities, expected[version][0], rtol=1e-5)
        seen.add(version)
    assert seen == {STABLE_VERSION, CANARY_VERSION}


def test_the_request_log_names_the_version_that_answered(rollout: Path, tmp_path: Path):
    running = start(serving_config(tmp_path, rollout / "models.config", canary_percent=50), rest_port=0)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        answered = sorted(predict(stub) for _ in range(60))
    finally:
        channel.close()
        running.stop()
    logged = read_request_logs([str(p) for p in (tmp_path / "logs").iterdir()], MODEL)
    assert sorted(r.version for r in logged.requests) == answered
    assert set(answered) == {STABLE_VERSION, CANARY_VERSION}


def test_with_the_canary_on_the_stable_version_the_newest_answers_as_before(rollout: Path, tmp_path: Path):
    config_file = write_models_config(tmp_path / "models.config", rollout / "models", 1, 1)
    running = start(serving_config(tmp_path, config_file, canary_percent=50), rest_port=0)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        assert {predict(stub, f"u{i}") for i in range(40)} == {CANARY_VERSION}  # TF Serving's rule
    finally:
        channel.close()
        running.stop()
