"""A run killed hard (SIGKILL) during Transform or Trainer, then run again; and two runs at once.

The killed run is a real `fmnist`-equivalent process on a slice; the rerun
happens in this process. Each scenario costs about a minute.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from ml_metadata.proto import metadata_store_pb2

from core.config import PipelineConfig
from pipeline.local_runner import run
from pipeline.metadata import Metadata, open_store
from pipeline.nodes import ALWAYS_RUN
from pipeline.run_guard import PipelineBusyError
from tests.conftest import tiny_config

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
RUNNING = metadata_store_pb2.Execution.RUNNING

RUN_IN_CHILD = """
import sys
from pipeline.local_runner import run
from tests.conftest import tiny_config
run(tiny_config(sys.argv[1], sys.argv[2], learning_rate=float(sys.argv[3])))
"""


def start_run(workdir: Path, learning_rate: float) -> subprocess.Popen:
    """The run in a child process whose temporary files go to `workdir/system-temp`, watched by the test."""
    command = [sys.executable, "-c", RUN_IN_CHILD, str(workdir), str(workdir / "data"), str(learning_rate)]
    env = {**os.environ, "TMPDIR": str(workdir / "system-temp")}
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def running_nodes(config: PipelineConfig) -> set[str]:
    """Nodes with an execution in RUNNING, read from MLMD (empty while the store is being created)."""
    try:
        metadata = Metadata.open(config)
        return {
            metadata.node_of(e.id) for e in metadata.store.get_executions() if e.last_known_state == RUNNING
        }
    except Exception:  # the store does not exist yet, or is mid-write
        return set()


def kill_during(process: subprocess.Popen, config: PipelineConfig, node: str) -> None:
    deadline = time.monotonic() + 300
    while node not in running_nodes(config):
        assert process.poll() is None, f"the run ended (exit {process.returncode}) before {node} started"
        assert time.monotonic() < deadline, f"{node} never started"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def states(report) -> dict[str, str]:
    return report.states()


@pytest.fixture
def workdir(slice_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the slice; runs in this process use the same watched temp dir as the child runs."""
    shutil.copytree(slice_data, tmp_path / "data")
    (tmp_path / "system-temp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "system-temp"))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "system-temp"))
    return tmp_path


def test_killed_during_transform_then_during_trainer_the_reruns_complete(workdir: Path):
    config = tiny_config(workdir, workdir / "data")

    first = start_run(workdir, config.training.learning_rate)
    kill_during(first, config, "Transform")
    assert running_nodes(config) == {"Transform"}  # what the kill left behind
    assert list((workdir / "system-temp").glob(f"fmnist-run-{first.pid}-*"))  # and its temp files
    report = run(config)
    assert list((workdir / "system-temp").iterdir()) == []  # removed by the rerun
    assert report.rerun_after_killed == ["Transform"]
    assert report.span == 1  # the interrupted span runs again
    assert states(report)["StatisticsGen"] == "CACHED" and states(report)["SpanExampleGen"] == "CACHED"
    assert states(report)["Transform"] == "COMPLETE" and report.model.pushed is True
    assert running_nodes(config) == set()

    second = start_run(workdir, 2e-3)  # span 2 with a new recipe
    kill_during(second, config, "Trainer")
    report = run(tiny_config(workdir, workdir / "data", learning_rate=2e-3))
    assert report.rerun_after_killed == ["Trainer"] and report.span == 2  # span 2 again, not skipped
    assert states(report)["Transform"] == "CACHED" and states(report)["Trainer"] == "COMPLETE"
    assert running_nodes(config) == set()
    canceled = [
        e
        for e in open_store(config).get_executions()
        if e.last_known_state == metadata_store_pb2.Execution.CANCELED
    ]
    assert len(canceled) == 2 and all(
        "process killed" in e.custom_properties["fmnist_note"].string_value for e in canceled
    )
    root = Path(config.pipeline_root)
    for execution in canceled:  # nothing of the killed executions is left on disk (#20: empty model dirs)
        left = [*root.glob(f"*/*/{execution.id}"), *root.glob(f"*/.system/*/{execution.id}")]
        assert left == [], left


def test_a_second_run_at_the_same_time_is_refused_and_the_store_stays_sound(workdir: Path):
    shutil.rmtree(workdir / "data" / "span-2")  # one span: the run after the first has nothing new
    config = tiny_config(workdir, workdir / "data")
    first = start_run(workdir, config.training.learning_rate)
    try:
        deadline = time.monotonic() + 120
        while "StatisticsGen" not in running_nodes(config) and first.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        with pytest.raises(
            PipelineBusyError, match=f"another run of this pipeline is in progress \\(pid {first.pid}"
        ):
            run(config)
        assert first.wait(timeout=600) == 0
    finally:
        first.kill()
    report = run(config)  # the store is intact: everything the first run made is reused
    executed = {name: state for name, state in states(report).items() if name not in ALWAYS_RUN}
    assert set(executed.values()) == {"CACHED"}, json.dumps(executed)
