"""The cloud path on this machine: data, pipeline root and serving directory in `gs://`, on a local
GCS emulator (`tests/services/gcs.py`), ML Metadata on MariaDB; then the served version answers from
`gs://`, and lineage and drift work on it. A push cut short at any step leaves nothing loadable."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tensorflow as tf

from cli.main import EXIT_DRIFT, main
from components import pusher
from core.config import replace
from core.errors import ServingError
from monitoring.batches import load_batch
from pipeline import nodes
from pipeline.local_runner import run
from pipeline.report import save_report
from serving.client import ServingClient
from serving.version_manager import versions_on_disk
from tests.conftest import tiny_config
from tests.services.gcs import fake_gcs
from tests.services.mariadb import mariadb

pytestmark = pytest.mark.e2e
BUCKET = "fmnist-e2e"
ROOT = f"gs://{BUCKET}/fmnist"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory):
    """The emulator and MariaDB running, and this process pointed at the emulator (restored after)."""
    with (
        fake_gcs(tmp_path_factory.mktemp("gcs"), BUCKET) as env,
        mariadb(tmp_path_factory.mktemp("mariadb")) as mysql,
    ):
        saved = {name: os.environ.get(name) for name in env}
        os.environ.update(env)
        try:
            yield {"env": env, "mysql": mysql}
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def upload(local: Path, remote: str) -> None:
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        target = f"{remote}/{path.relative_to(local)}"
        tf.io.gfile.makedirs(os.path.dirname(target))
        tf.io.gfile.copy(str(path), target, overwrite=True)


@pytest.fixture(scope="module")
def cloud_runs(cloud: dict, slice_data: Path) -> dict:
    """Span 1 of the slice and the gold set uploaded to gs://, a run, and its unchanged rerun."""
    for part in ("span-1", "test"):
        upload(slice_data / part, f"{ROOT}/data/{part}")
    upload_manifest = slice_data / "manifest.json"
    tf.io.gfile.copy(str(upload_manifest), f"{ROOT}/data/manifest.json", overwrite=True)
    config = replace(tiny_config(ROOT, f"{ROOT}/data"), metadata_mysql=cloud["mysql"])
    return {"config": config, "first": run(config), "second": run(config)}


def test_a_run_reads_and_writes_only_gs_and_its_rerun_is_cached(cloud_runs: dict):
    config, first, second = cloud_runs["config"], cloud_runs["first"], cloud_runs["second"]
    assert config.pipeline_root.startswith("gs://") and config.serving_dir.startswith("gs://")
    assert first.model.pushed and first.model.pushed_path.startswith(f"{ROOT}/serving/fashion_mnist/")
    assert tf.io.gfile.exists(f"{first.model.pushed_path}/saved_model.pb")
    assert tf.io.gfile.exists(f"{ROOT}/serving/models.config")  # the rollout, in the bucket
    saved, path = save_report(first, config)  # as `fmnist run` saves it: JSON and the confusion PNG
    assert path.startswith(f"{config.pipeline_root}/reports/") and tf.io.gfile.exists(path)
    assert tf.io.gfile.exists(saved.confusion_matrix_png)
    executed = {name: state for name, state in second.states().items() if name not in nodes.ALWAYS_RUN}
    assert set(executed.values()) == {"CACHED"}, executed


def test_fmnist_serve_serves_the_pushed_version_from_gs(cloud: dict, cloud_runs: dict, slice_data: Path):
    import portpicker

    version = int(cloud_runs["first"].model.pushed_version)
    port = portpicker.pick_unused_port()
    command = [str(Path(sys.executable).parent / "fmnist"), "serve", "--workdir", ROOT,
               "--port", str(port), "--rest-api-port", "0"]  # fmt: skip
    server = subprocess.Popen(
        command,
        env={**os.environ, **cloud["env"]},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        client = ServingClient(f"127.0.0.1:{port}", timeout=10, retries=0)
        deadline = time.monotonic() + 120
        while True:
            try:
                status = client.status().model_version_status
                if status and status[0].state == status[0].AVAILABLE:
                    break
            except ServingError:
                pass
            assert time.monotonic() < deadline and server.poll() is None, server.stdout.read()
            time.sleep(0.5)
        images = load_batch(str(slice_data / "test")).images[:4]
        predictions, answered_by = client.predict_images(images, label="stable")
        assert answered_by == version and len(predictions) == 4
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=60)  # reads while waiting: a full pipe would block the server
        assert server.returncode == 0
        assert "models.config" in output
    finally:
        server.kill()


def test_lineage_and_drift_work_on_the_gs_pipeline(
    cloud_runs: dict, slice_data: Path, tmp_path: Path, capsys
):
    config = cloud_runs["config"]
    flags = ["--workdir", ROOT, "--metadata-mysql", config.metadata_mysql]
    capsys.readouterr()
    assert main(["lineage", "--json", *flags]) == 0
    chain = json.loads(capsys.readouterr().out)
    assert chain["pushed_destination"].startswith(f"{ROOT}/serving/") and chain["spans"][0]["span"] == 1
    code = main(["drift", str(slice_data / "test"), "--output", str(tmp_path / "report"), *flags])
    assert code in (0, EXIT_DRIFT)
    assert tf.io.gfile.glob(f"{config.pipeline_root}/drift_reference/*/statistics.pb")  # cached in gs://


@pytest.mark.parametrize("where", ["local", "gs"])
def test_a_push_cut_short_at_any_step_leaves_nothing_a_server_would_load(
    cloud: dict, cloud_runs: dict, tmp_path: Path, monkeypatch, where: str
):
    model = cloud_runs["first"].model.pushed_path  # any SavedModel will do
    base = str(tmp_path / "serving") if where == "local" else f"gs://{BUCKET}/push-{time.time_ns()}"
    real_copy, counted = tf.io.gfile.copy, []

    def counting_copy(source, target, overwrite=False):
        counted.append(target)
        return real_copy(source, target, overwrite=overwrite)

    monkeypatch.setattr(tf.io.gfile, "copy", counting_copy)
    complete = pusher.publish_version(model, base, "model-complete")  # how many copies a push makes
    assert list(versions_on_disk(base)) == [complete] and counted
    monkeypatch.setattr(pusher, "_remove", lambda path: None)  # as if killed: nothing cleans up
    for cut in range(1, len(counted) + 1):
        calls = []

        def failing_copy(source, target, overwrite=False, cut=cut, calls=calls):
            calls.append(target)
            if len(calls) == cut:
                raise tf.errors.UnavailableError(None, None, f"cut after {cut - 1} files")
            return real_copy(source, target, overwrite=overwrite)

        monkeypatch.setattr(tf.io.gfile, "copy", failing_copy)
        with pytest.raises(pusher.PushError):
            pusher.publish_version(model, base, f"model-{cut}")
        loadable = versions_on_disk(base)  # numbered directories holding a saved_model.pb
        assert list(loadable) == [complete], f"cut at copy {cut} of {len(counted)}: {sorted(loadable)}"
