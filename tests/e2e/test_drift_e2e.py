"""`fmnist drift` as a user runs it, against the model a slice run pushed (reference found through MLMD)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cli.main import EXIT_BAD_INPUT, EXIT_DRIFT, main
from monitoring.batches import load_batch

pytestmark = pytest.mark.e2e


def drift(pipeline_runs: dict, batch: Path, output: Path, *flags: str) -> tuple[int, dict]:
    code = main(
        ["drift", str(batch), "--workdir", pipeline_runs["config"].workdir, "--output", str(output), *flags]
    )
    summary = output / "drift_summary.json"
    return code, json.loads(summary.read_text()) if summary.exists() else {}


def test_served_traffic_then_one_command_reports_no_drift(
    pipeline_runs: dict, slice_data: Path, tmp_path: Path
):
    from core.config import ServingConfig
    from serving.client import ServingClient
    from serving.server import build_server
    from serving.version_manager import VersionManager

    base, logs = tmp_path / "models", tmp_path / "logs"
    shutil.copytree(pipeline_runs["first"].model.pushed_path, base / "fashion_mnist" / "1")
    store = VersionManager(str(base), poll_seconds=3600)
    store.poll_once()
    server, port, _ = build_server(
        store, ServingConfig(model_base_path=str(base), port=0, request_log_dir=str(logs))
    )
    server.start()
    try:
        client = ServingClient(f"127.0.0.1:{port}", timeout=30)
        images = load_batch(str(slice_data / "test")).images
        for start in range(0, len(images), 20):
            client.predict_images(images[start : start + 20])
    finally:
        server.stop(grace=None)

    code, summary = drift(pipeline_runs, logs, tmp_path / "report")
    assert code == 0 and summary["verdict"] == "no drift", summary["features"][:3]
    assert summary["batch"]["images"] == 300
    version = pipeline_runs["first"].model.pushed_version
    assert summary["served_version"] == int(version)
    description = summary["reference"]["description"]
    assert description.startswith(f"training window of version {version} (spans [1], ")
    assert any(f["feature"] == "predicted_class" for f in summary["features"])  # from the logged answers
    assert (tmp_path / "report" / "drift_report.html").read_text().count("NO DRIFT") == 1


def test_darkened_images_drift_and_the_report_names_what_moved(
    pipeline_runs: dict, slice_data: Path, tmp_path: Path
):
    darker = (load_batch(str(slice_data / "test")).images * 0.5).astype(np.uint8)
    np.save(tmp_path / "darker.npy", darker)
    code, summary = drift(pipeline_runs, tmp_path / "darker.npy", tmp_path / "report")
    assert code == EXIT_DRIFT and summary["verdict"] == "drift"
    assert {"mean_intensity", "contrast"} & set(summary["drifted_features"])
    assert "DRIFT:" in (tmp_path / "report" / "drift_report.html").read_text()


def test_bad_input_and_unknown_versions_exit_2_with_the_reason(
    pipeline_runs: dict, slice_data: Path, tmp_path: Path, capsys
):
    code, _ = drift(pipeline_runs, tmp_path / "nothing.npy", tmp_path / "report")
    assert code == EXIT_BAD_INPUT and "nothing.npy: no such file" in capsys.readouterr().err
    code, _ = drift(pipeline_runs, slice_data / "test", tmp_path / "report", "--version", "1")
    assert code == EXIT_BAD_INPUT and "version 1 was not pushed" in capsys.readouterr().err
