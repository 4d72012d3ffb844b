"""The loop beyond one run: a drifted span is refused, the served model is the bar, labels move a server."""

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from cli.main import main
from core.config import ServingConfig
from core.examples import read_labelled_images
from ingest.spans import write_span
from pipeline import nodes
from pipeline.local_runner import PipelineFailedError, run
from pipeline.metadata import Metadata, open_store
from pipeline.resolvers import BASELINE, ServedModelStrategy
from pipeline.span_plan import plan_spans
from serving.client import ServingClient
from serving.rollout import models_config_path, models_config_text, read_rollout, replace_file
from serving.server import build_server
from serving.version_manager import VersionManager
from tests.conftest import snapshot, tiny_config

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def drifted_span(slice_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Span 1 as it is, span 2 inverted (255 - pixels, labels kept): a bad day the drift gate must refuse."""
    workdir = tmp_path_factory.mktemp("drift")
    shutil.copytree(slice_data, workdir / "data")
    span_2 = workdir / "data" / "span-2"
    pixels, labels = read_labelled_images(sorted(str(p) for p in span_2.glob("*.tfrecord.gz")))
    shutil.rmtree(span_2)
    write_span(str(workdir / "data"), 255 - pixels, labels, "span 2, inverted", span=2)
    config = tiny_config(workdir, workdir / "data")
    first = run(config)
    served = snapshot(Path(config.serving_dir))
    with pytest.raises(PipelineFailedError) as refused:
        run(config)
    return {"config": config, "first": first, "served": served, "refused": refused.value}


def test_a_drifted_span_stops_the_run_naming_the_features_that_moved(drifted_span: dict):
    failure = drifted_span["refused"]
    message = str(failure)
    assert "span 2 drifted from the data before it" in message
    assert "against the previous span, feature 'mean_intensity': Jensen-Shannon divergence" in message
    assert "against the training window, feature 'mean_intensity'" in message
    report = failure.report
    assert report.states()[nodes.DRIFT_GATE] == "FAILED"
    assert nodes.TRANSFORM not in report.states() and nodes.PUSHER not in report.states()
    assert any("feature 'grid_00': Jensen-Shannon divergence 1.0000" in line for line in report.drift)  # why


def test_the_stable_version_never_changes_and_the_refused_span_never_trains(drifted_span: dict):
    config = drifted_span["config"]
    assert snapshot(Path(config.serving_dir)) == drifted_span["served"]
    plan = plan_spans(config)
    assert plan.refused == (2,) and plan.span == 1 and not plan.new  # nothing new: span 1 again
    rerun = run(config)
    executed = {name: state for name, state in rerun.states().items() if name not in nodes.RESOLVERS}
    assert set(executed.values()) == {"CACHED"}, executed


def test_a_first_model_under_the_floor_keeps_its_span_so_the_next_day_trains_on_more(
    slice_data: Path, tmp_path: Path
):
    """Nothing serves yet: the floor refusal says "too little data", not "bad span"."""
    shutil.copytree(slice_data, tmp_path / "data")
    unreachable = tiny_config(tmp_path, tmp_path / "data", accuracy_floor=0.99)
    first = run(unreachable)
    assert first.model.blessed is False and not first.model.pushed
    plan = plan_spans(unreachable)
    assert (plan.span, plan.new, plan.refused, plan.previous) == (2, True, (), 1)

    config = tiny_config(tmp_path, tmp_path / "data")
    second = run(config)
    assert second.span == 2 and second.model.pushed is True
    meta = Metadata(open_store(config), config.pipeline_name)
    (pushed,) = meta.pushed_models().values()
    assert meta.training_spans(meta.one(meta.producer(pushed).id, "model")) == [1, 2]


def test_the_baseline_is_the_stable_version_not_the_newest_blessed_one(pipeline_runs: dict):
    config = pipeline_runs["config"]
    meta = Metadata(open_store(config), config.pipeline_name)
    stable = read_rollout(config.serving_dir, config.model_name).stable
    assert stable == int(pipeline_runs["first"].model.pushed_version)
    models = {a.id: a for a in meta.store.get_artifacts_by_type("Model")}
    newest_blessed_canary = int(pipeline_runs["second"].model.pushed_version)
    assert newest_blessed_canary > stable
    from tfx.types import standard_artifacts

    channel = []
    for artifact in models.values():
        model = standard_artifacts.Model()
        model.set_mlmd_artifact(artifact)
        channel.append(model)
    strategy = ServedModelStrategy(config.serving_dir, config.model_name, config.pipeline_name, 3, BASELINE)
    (resolved,) = strategy.resolve_artifacts(meta.store, {"model": channel})["model"]
    stable_model = meta.one(meta.producer(meta.pushed_models()[stable]).id, "model")
    assert resolved.id == stable_model.id


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
    server, port, _ = build_server(manager, ServingConfig(port=0))
    server.start()
    client = ServingClient(f"127.0.0.1:{port}", timeout=30)
    image = np.zeros((1, 28, 28), np.uint8)

    def version_for(label: str | None) -> int:
        return client.predict_images(image, label=label)[1]

    try:
        assert (version_for("stable"), version_for("canary")) == (stable, canary)
        assert version_for(None) == canary  # TF Serving's rule: no version asked, the highest loaded answers
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
