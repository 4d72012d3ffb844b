"""The local runner's temporary directory: one per run, removed after it, or by the next run if killed."""

import os
import subprocess
import tempfile
from pathlib import Path

from pipeline.local_runner import remove_abandoned_run_temp_dirs, run_temp_dir


def test_a_run_temp_dir_is_gone_after_the_run_and_the_system_temp_dir_restored(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with run_temp_dir() as path:
        assert tempfile.gettempdir() == path and os.environ["TMPDIR"] == path
        Path(tempfile.mkdtemp(), "build").mkdir()  # as TFX's Beam executors do, never deleting it
    assert tempfile.gettempdir() == str(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_only_the_temp_dirs_of_processes_that_are_gone_are_removed(tmp_path: Path):
    ended = subprocess.Popen(["true"])
    ended.wait()
    live = tmp_path / f"fmnist-run-{os.getpid()}-abc"
    abandoned = tmp_path / f"fmnist-run-{ended.pid}-def"
    other = tmp_path / "someone-else"
    for path in (live, abandoned, other):
        (path / "build").mkdir(parents=True)
    assert remove_abandoned_run_temp_dirs(str(tmp_path)) == [str(abandoned)]
    assert live.exists() and other.exists() and not abandoned.exists()
