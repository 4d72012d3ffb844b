"""`fmnist drift` as a user runs it, against the model a slice run pushed (reference found through MLMD).

The pushed version carries the accuracy estimator its Trainer fitted, and the
report estimates the batch's accuracy with it.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cli.main import EXIT_BAD_INPUT, EXIT_DRIFT, main
from components.trainer import ESTIMATOR_FIT_IMAGES
from core import accuracy_estimate as ae
from core.examples import read_example_images, split_files
from core.vocabulary import CLASS_NAMES
from monitoring.batches import load_batch
from monitoring.estimated_accuracy import ESTIMATED_ACCURACY, percent

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
    page = (tmp_path / "report" / "drift_report.html").read_text()
    assert page.count("NO DRIFT") == 1

    estimator = ae.load_estimator(ae.estimator_path(pipeline_runs["first"].model.pushed_path))
    expected = estimator.estimate(
        load_batch(str(logs)).probabilities
    )  # the logged answers, version's estimator
    got = summary[ESTIMATED_ACCURACY]
    assert (got["value"], got["low"], got["high"]) == (expected.value, expected.low, expected.high)
    assert got["method"] in ae.METHODS and set(got["per_class"]) == set(CLASS_NAMES)
    assert got["answers"] == "the logged answers" and got["estimator"]["version"] == int(version)
    assert "version(s) 1, read with" in got["caution"]  # this test served the pushed model as version 1
    assert f"Estimated accuracy: {percent(expected.value)}" in page and "wrong answers per 1,000" in page


def test_darkened_images_drift_and_the_report_names_what_moved(
    pipeline_runs: dict, slice_data: Path, tmp_path: Path
):
    darker = (load_batch(str(slice_data / "test")).images * 0.5).astype(np.uint8)
    np.save(tmp_path / "darker.npy", darker)
    code, summary = drift(pipeline_runs, tmp_path / "darker.npy", tmp_path / "report")
    assert code == EXIT_DRIFT and summary["verdict"] == "drift"
    assert {"mean_intensity", "contrast"} & set(summary["drifted_features"])
    estimated = summary[ESTIMATED_ACCURACY]
    assert estimated["answers"] == "the model's answers" and 0 <= estimated["low"] <= estimated["high"] <= 1
    assert "DRIFT:" in (tmp_path / "report" / "drift_report.html").read_text()


def test_bad_input_and_unknown_versions_exit_2_with_the_reason(
    pipeline_runs: dict, slice_data: Path, tmp_path: Path, capsys
):
    code, _ = drift(pipeline_runs, tmp_path / "nothing.npy", tmp_path / "report")
    assert code == EXIT_BAD_INPUT and "nothing.npy: no such file" in capsys.readouterr().err
    code, _ = drift(pipeline_runs, slice_data / "test", tmp_path / "report", "--version", "1")
    assert code == EXIT_BAD_INPUT and "version 1 was not pushed" in capsys.readouterr().err


def test_every_pushed_version_carries_an_estimator_fitted_on_its_eval_split(pipeline_runs: dict):
    from pipeline.lineage import lineage_of
    from pipeline.report import format_report

    first = pipeline_runs["first"]
    chain = lineage_of(pipeline_runs["config"], int(first.model.pushed_version))
    eval_images = sum(
        len(read_example_images(split_files(str(Path(span.examples_uri) / "Split-eval"))))
        for span in chain.spans
    )
    estimator = ae.load_estimator(ae.estimator_path(first.model.pushed_path))
    assert estimator.held_out_examples == min(eval_images, ESTIMATOR_FIT_IMAGES) > 0
    assert first.model.serving_check_passed  # the served graph still loads, warmup included
    facts = first.model.accuracy_estimator
    assert facts["held_out_images"] == estimator.held_out_examples
    assert facts["held_out_accuracy"] == estimator.held_out_accuracy
    assert f"fitted on {estimator.held_out_examples:,} held-out eval images" in format_report(first)
