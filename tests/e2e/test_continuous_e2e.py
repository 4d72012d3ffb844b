"""The loop beyond one run, from one compiled pipeline: refused spans, the served model as the bar, labels.

The runs are conftest's `pipeline_runs`: span 1 is pushed; spans 2 (drifted), 3 (shuffled labels) and
4 (good) arrive at once and are taken in order; then nothing new.
"""

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from cli.main import main
from components.served_model import copy_served_model
from core.config import ServingConfig
from core.ledger import read_ledger
from core.span_rules import SpanHistory, choose_span
from core.spans import spans_on_disk
from pipeline import nodes
from pipeline.kubeflow_runner import kubeflow_config, spec_tasks
from pipeline.local_runner import PipelineFailedError, run
from pipeline.metadata import INPUT_EVENTS, Metadata, properties
from release.rollout import models_config_path, models_config_text, read_rollout, replace_file
from serving.client import ServingClient
from serving.server import build_server
from serving.version_manager import VersionManager
from tests.conftest import tiny_config

pytestmark = pytest.mark.e2e


def test_one_compiled_pipeline_runs_the_whole_loop(pipeline_runs: dict):
    """Compiled once from the configuration; each run's span and gates were decided while it ran."""

    def outcome(run) -> tuple:
        if isinstance(run, PipelineFailedError):
            return run.report.span, run.report.error.split(":")[0]
        return run.span, "pushed" if run.model.pushed else "not pushed"

    outcomes = {name: outcome(pipeline_runs[name]) for name in ("first", "drifted", "mislabelled", "second")}
    assert outcomes == {
        "first": (1, "pushed"),
        "drifted": (2, "DataDriftError"),
        "mislabelled": (3, "LabelDisagreementError"),
        "second": (4, "pushed"),
    }


def test_a_drifted_span_stops_the_run_naming_the_features_that_moved(pipeline_runs: dict):
    failure = pipeline_runs["drifted"]
    message = str(failure)
    assert "span 2 drifted from the data before it" in message
    assert "against the previous span, feature 'mean_intensity': Jensen-Shannon divergence" in message
    assert "against the training window, feature 'mean_intensity'" in message
    report = failure.report
    assert report.states()[nodes.DRIFT_GATE] == "FAILED" and "compared with span 1" in report.span_plan
    assert nodes.TRANSFORM not in report.states() and nodes.PUSHER not in report.states()
    corner = [line for line in report.drift if "previous span, feature 'grid_00': Jensen-Shannon" in line]
    assert (
        len(corner) == 1 and float(corner[0].split("divergence ")[1].split()[0]) > 0.95
    ), report.drift  # why


def test_shuffled_labels_stop_the_run_at_the_label_gate(pipeline_runs: dict):
    failure = pipeline_runs["mislabelled"]
    assert "the served model agrees with" in str(failure)
    assert "below the 70% a span needs (--min-relative-label-agreement)" in str(failure)
    report = failure.report
    assert report.states()[nodes.DRIFT_GATE] == "COMPLETE"  # images and class shares look fine
    assert report.states()[nodes.LABEL_GATE] == "FAILED" and nodes.TRANSFORM not in report.states()
    assert "compared with span 1" in report.span_plan  # not with the drifted span 2


def test_refused_spans_never_train_and_the_stable_version_never_changes(pipeline_runs: dict):
    config = pipeline_runs["config"]
    first = pipeline_runs["served_after_first"]
    assert (
        pipeline_runs["served_after_drifted"] == first and pipeline_runs["served_after_mislabelled"] == first
    )
    records = read_ledger(config.span_ledger)
    refused = {(r.span, r.gate) for r in records if r.event == "refused"}
    assert refused == {(2, "drift"), (3, "labels")}
    choice = choose_span(spans_on_disk(config.data_dir), SpanHistory.of(records))
    assert (choice.span, choice.new, choice.refused) == (4, False, (2, 3))  # nothing new: span 4 again


def test_the_compiled_spec_carries_every_step_and_input_a_local_run_executed(pipeline_runs: dict, tmp_path):
    """Kubeflow V2 / Vertex AI get the loop: each execution of span 4's run, and every input it read."""
    from pipeline.kubeflow_runner import compile_kubeflow_v2

    config = pipeline_runs["config"]
    path, missing = compile_kubeflow_v2(config, "image:test", str(tmp_path / "spec.json"))
    assert missing == []
    tasks = spec_tasks(json.loads(Path(path).read_text()))
    meta = Metadata.open(config)
    run = meta.run_of(meta.node_executions(nodes.PUSHER)[1])  # span 4's run: every step executed
    executed = {}
    for execution in meta.executions(run.id):
        events = meta.store.get_events_by_execution_ids([execution.id])
        executed[meta.node_of(execution.id)] = {e.path.steps[0].key for e in events if e.type in INPUT_EVENTS}
    assert set(executed) == set(tasks)
    for node, inputs in executed.items():
        assert inputs == tasks[node], node  # the same inputs, none dropped on the way to Vertex
    assert kubeflow_config(config).pipeline_name == "fashion-mnist"


def test_the_baseline_is_the_stable_version_not_the_newest_blessed_one(pipeline_runs: dict, tmp_path: Path):
    config = pipeline_runs["config"]
    stable = read_rollout(config.serving_dir, config.model_name).stable
    canary = int(pipeline_runs["second"].model.pushed_version)
    assert (
        stable == int(pipeline_runs["first"].model.pushed_version) and canary > stable
    )  # B is blessed, newer
    assert copy_served_model(config.serving_dir, config.model_name, str(tmp_path / "copy")) == stable
    meta = Metadata.open(config)
    evaluator = meta.node_executions(nodes.EVALUATOR)[-1]  # the changed recipe's, after B was pushed
    assert properties(meta.one(evaluator.id, "baseline_model"))["served_version"] == stable


def test_a_first_model_under_the_floor_keeps_its_span_so_the_next_day_trains_on_more(
    slice_data: Path, tmp_path: Path
):
    """Nothing serves yet: the floor refusal says "too little data", not "bad span"."""
    shutil.copytree(slice_data, tmp_path / "data")
    unreachable = tiny_config(tmp_path, tmp_path / "data", accuracy_floor=0.99)
    first = run(unreachable)
    assert first.model.blessed is False and not first.model.pushed
    choice = choose_span([1, 2], SpanHistory.of(read_ledger(unreachable.span_ledger)))
    assert (choice.span, choice.new, choice.refused, choice.previous) == (2, True, (), 1)

    config = tiny_config(tmp_path, tmp_path / "data")
    second = run(config)
    assert second.span == 2 and second.model.pushed is True
    meta = Metadata.open(config)
    (pushed,) = meta.pushed_models().values()
    assert meta.training_spans(meta.one(meta.producer(pushed).id, "model")) == [1, 2]


def wait_for(label_version, expected: int, what: str) -> None:
    deadline = time.monotonic() + 30
    while label_version() != expected:
        assert time.monotonic() < deadline, f"{what}: still {label_version()}, expected {expected}"
        time.sleep(0.1)


def test_promote_and_rollback_move_what_a_running_server_answers_for_stable(
    pipeline_runs: dict, tmp_path: Path
):
    config = pipeline_runs["config"]
    serving_dir = tmp_path / "serving"
    shutil.copytree(config.serving_dir, serving_dir)  # the fixture's own rollout stays as it is
    model = config.model_name
    replace_file(
        models_config_path(str(serving_dir)),
        models_config_text(str(serving_dir), model, read_rollout(str(serving_dir), model)),
    )
    stable, canary = (
        int(pipeline_runs["first"].model.pushed_version),
        int(pipeline_runs["second"].model.pushed_version),
    )
    manager = VersionManager(config_file=models_config_path(str(serving_dir)), poll_seconds=0.1)
    manager.start()
    server, port, _ = build_server(manager, ServingConfig(port=0, canary_percent=100))  # no version: canary
    server.start()
    client = ServingClient(f"127.0.0.1:{port}", timeout=30)
    image = np.zeros((1, 28, 28), np.uint8)

    def version_for(label: str | None) -> int:
        return client.predict_images(image, label=label)[1]

    try:
        assert (version_for("stable"), version_for("canary")) == (stable, canary)
        assert version_for(None) == canary  # all to the canary: as TF Serving's rule, the highest loaded
        assert main(["promote", "--serving-dir", str(serving_dir)]) == 0
        wait_for(lambda: version_for("stable"), canary, "after promote")
        assert main(["rollback", "--serving-dir", str(serving_dir)]) == 0
        wait_for(lambda: version_for("stable"), stable, "after rollback")
        wait_for(lambda: version_for(None), stable, "the rolled-back version leaves service")
        assert version_for("canary") == stable
    finally:
        client.close()
        server.stop(grace=None)
        manager.stop()
