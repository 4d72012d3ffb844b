"""The request-logging proxy before a TF Serving server: transparent; its logs feed the drift report."""

import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import get_model_status_pb2

from core.config import ServingConfig
from core.errors import ServingError
from monitoring.batches import load_batch
from serving.client import RequestRefusedError, ServingClient
from serving.log_proxy import build_proxy
from serving.server import build_server
from serving.version_manager import VersionManager

pytestmark = pytest.mark.e2e  # serves the model a slice run pushed


def test_the_proxy_forwards_every_rpc_and_logs_predict(pipeline_runs: dict, slice_data: Path, tmp_path: Path):
    base = tmp_path / "models"
    shutil.copytree(pipeline_runs["first"].model.pushed_path, base / "fashion_mnist" / "5")
    store = VersionManager(str(base), poll_seconds=3600)
    store.poll_once()
    upstream, upstream_port = build_server(store, ServingConfig(model_base_path=str(base), port=0))
    upstream.start()
    proxy, proxy_port, logger = build_proxy(f"127.0.0.1:{upstream_port}", str(tmp_path / "logs"), port=0)
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
    proxy, port, logger = build_proxy("127.0.0.1:1", str(tmp_path / "logs"), port=0, timeout=2)
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
