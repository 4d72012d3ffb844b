"""`fmnist canary` on a live server: a worse canary is rolled back, an equal one promoted, few requests hold.

Three versions of the small pixels model, each trained for a second on the
same 1,500 real images: stable (1), a worse canary trained on shuffled labels
(2), and an equally good one trained from other initial weights (3). Each
carries an accuracy estimator fitted on 1,000 held-out real images; clients
send 800 more through the traffic split. All from the official test split,
which reads in a fraction of the training split's time (the models are
stand-ins: which images trained them does not matter here).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from cli.main import main
from core.accuracy_estimate import estimator_path, fit, save_estimator
from core.errors import EXIT_BAD_INPUT, EXIT_HOLD, EXIT_OK, EXIT_ROLL_BACK
from core.vocabulary import IMAGES_INPUT, IMAGES_SIGNATURE
from ingest.prepare import OFFICIAL_FILES, parse_split, read_split
from monitoring.drift import model_predictor
from release.history import read_history
from release.rollout import push_canary, read_rollout
from serving.metrics import DEFAULT_PATH
from serving.request_log import RequestLogger
from serving.server import start
from serving.tensors import proto_from_array
from tests.serving import pixels_model
from tests.serving.canary_models import MODEL, serving_config

TRAIN, HELD_OUT = 1500, 1000
STABLE, WORSE, EQUAL = 1, 2, 3
MIN_REQUESTS = 100
# The table tests pin the latency rule; on a shared 2-core machine a tiny model's p99 can jump by tens of ms.
LATENCY_ALLOWANCE_MS = 1000


def export(serving: Path, version: int, images, labels, held_out, seed: int) -> None:
    """A trained version with its estimator, fitted on the held-out images' true labels."""
    path = str(serving / MODEL / str(version))
    pixels_model.build(path, model=pixels_model.trained(images, labels, seed))
    held_images, held_labels = held_out
    save_estimator(fit(model_predictor(path)(held_images), held_labels), estimator_path(path))


@pytest.fixture(scope="module")
def real_images(official_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    return parse_split(read_split(official_dir, OFFICIAL_FILES["test"]), "test", OFFICIAL_FILES["test"])


@pytest.fixture(scope="module")
def test_images(real_images) -> np.ndarray:
    """Images no version trained on or was fitted on: the clients' traffic."""
    return real_images[0][TRAIN + HELD_OUT :]


@pytest.fixture(scope="module")
def rollout(real_images, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("canary")
    images, labels = real_images
    train, held_out = (images[:TRAIN], labels[:TRAIN]), (images[TRAIN:], labels[TRAIN:])
    shuffled = np.random.default_rng(0).permutation(train[1])
    export(root / "serving", STABLE, *train, held_out, seed=0)
    export(root / "serving", WORSE, train[0], shuffled, held_out, seed=0)
    export(root / "serving", EQUAL, *train, held_out, seed=1)
    push_canary(str(root / "serving"), MODEL, STABLE)
    return root


def send(stub, images: np.ndarray, first_client: int) -> list[int]:
    """One Predict per image naming no version, each from its own client; the versions that answered."""
    answered = []
    for i, image in enumerate(images):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = MODEL
        request.model_spec.signature_name = IMAGES_SIGNATURE
        request.inputs[IMAGES_INPUT].CopyFrom(proto_from_array(image[np.newaxis]))
        metadata = [("x-client-id", f"user-{first_client + i}")]
        answered.append(stub.Predict(request, timeout=30, metadata=metadata).model_spec.version.value)
    return answered


def verdict(root: Path, metrics_url: str, *extra: str) -> int:
    argv = ["canary", str(root / "logs"), "--serving-dir", str(root / "serving"), "--metrics-url",
            metrics_url, "--canary-min-requests", str(MIN_REQUESTS), "--canary-max-p99-increase-ms",
            str(LATENCY_ALLOWANCE_MS), "--json", *extra]  # fmt: skip
    return main(argv)


def wait_for_versions(stub, expected: set[int], images: np.ndarray) -> None:
    """Until requests naming no version reach exactly `expected` (the server polls models.config)."""
    deadline = time.monotonic() + 30
    while set(send(stub, images[:40], 10**6)) != expected:
        assert time.monotonic() < deadline, f"the server never routed to {expected} alone"
        time.sleep(0.3)


def test_a_worse_canary_is_rolled_back_an_equal_one_promoted_and_little_traffic_holds(
    rollout: Path, test_images: np.ndarray, capsys
):
    config = serving_config(
        rollout, rollout / "serving" / "models.config", canary_percent=50, poll_seconds=0.3
    )
    running = start(config, rest_port=0)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    metrics_url = f"http://127.0.0.1:{running.rest_port}{DEFAULT_PATH}"
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    try:
        push_canary(str(rollout / "serving"), MODEL, WORSE)
        wait_for_versions(stub, {STABLE, WORSE}, test_images)
        capsys.readouterr()

        code = verdict(rollout, metrics_url)
        held = json.loads(capsys.readouterr().out)
        assert code == EXIT_HOLD and held["decision"] == "HOLD"
        assert (
            held["more_requests"] > 0 and f"about {held['more_requests']} more requests" in held["reasons"][0]
        )

        send(stub, test_images[:400], 0)
        code = verdict(rollout, metrics_url, "--apply", "--reason", "nightly check")
        rolled = json.loads(capsys.readouterr().out)
        assert code == EXIT_ROLL_BACK, rolled
        assert rolled["evidence"]["agreement"] < 0.5
        assert rolled["evidence"]["accuracy_difference"]["high"] < -0.2
        assert (
            rolled["evidence"]["canary_p99_ms"] is not None and rolled["evidence"]["canary_error_rate"] == 0
        )
        assert read_rollout(str(rollout / "serving"), MODEL).labels() == {"stable": STABLE, "canary": STABLE}
        wait_for_versions(stub, {STABLE}, test_images)

        push_canary(str(rollout / "serving"), MODEL, EQUAL)
        wait_for_versions(stub, {STABLE, EQUAL}, test_images)
        send(stub, test_images[400:800], 1000)
        capsys.readouterr()
        code = verdict(rollout, metrics_url, "--apply")
        promoted = json.loads(capsys.readouterr().out)
        assert code == EXIT_OK, promoted
        assert promoted["evidence"]["agreement"] > 0.7
        assert promoted["evidence"]["drifted_features"] == []
        assert read_rollout(str(rollout / "serving"), MODEL).labels() == {"stable": EQUAL, "canary": EQUAL}
        wait_for_versions(stub, {EQUAL}, test_images)
    finally:
        channel.close()
        running.stop()

    history = read_history(str(rollout / "serving"), MODEL)
    assert [h["action"] for h in history] == ["push", "push", "canary rollback", "push", "promote"]
    assert history[2]["reason"] == "nightly check" and history[2]["verdict"]["decision"] == "ROLL BACK"
    assert history[4]["before"]["stable"] == STABLE and history[4]["after"]["stable"] == EQUAL
    assert history[4]["verdict"]["evidence"]["canary_version"] == EQUAL


def test_bad_input_exits_2_naming_it(rollout: Path, tmp_path: Path, capsys):
    """Missing or empty logs, no canary, a canary not on disk, a reason with nothing to record it in."""
    serving, logs = tmp_path / "serving", tmp_path / "logs"
    shutil.copytree(rollout / "serving" / MODEL / str(STABLE), serving / MODEL / str(STABLE))
    logger = RequestLogger(str(logs))
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.inputs[IMAGES_INPUT].CopyFrom(proto_from_array(np.zeros((1, 28, 28), np.uint8)))
    logger.log_predict(request, predict_pb2.PredictResponse(model_spec=request.model_spec))
    logger.close()
    (tmp_path / "empty").mkdir()
    state = serving / MODEL / "rollout.json"
    cases = [
        ([str(tmp_path / "no-logs")], "no-logs: no such file or directory"),
        ([str(tmp_path / "empty")], "empty: holds no request logs"),
        ([str(logs)], "rollout.json: no canary to judge (nothing pushed yet)"),
        ([str(logs), "--reason", "why"], "--reason: recorded only with --apply"),
    ]
    for argv, message in cases:
        assert main(["canary", *argv, "--serving-dir", str(serving)]) == EXIT_BAD_INPUT
        assert message in capsys.readouterr().err
    state.write_text(json.dumps({"stable": STABLE, "canary": 9, "history": []}))
    assert main(["canary", str(logs), "--serving-dir", str(serving)]) == EXIT_BAD_INPUT
    assert (
        f"version 9 is not on disk (no saved_model.pb under {serving / MODEL / '9'})"
        in capsys.readouterr().err
    )
