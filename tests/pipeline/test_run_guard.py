"""One run per pipeline root: the lock refuses a second run and dies with its process."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.run_guard import LOCK_FILE, PipelineBusyError, root_lock

REPO = Path(__file__).resolve().parents[2]


def start_and_end_a_run(root: Path) -> None:
    with root_lock(str(root)):
        pass


def test_a_second_run_on_the_same_root_is_refused_naming_the_holder(tmp_path: Path):
    with root_lock(str(tmp_path)):
        holder = rf"{LOCK_FILE}: another run of this pipeline is in progress \(pid {os.getpid()}, started"
        with pytest.raises(PipelineBusyError, match=holder):
            start_and_end_a_run(tmp_path)
    start_and_end_a_run(tmp_path)  # released on exit


def test_the_lock_of_a_killed_run_does_not_block_the_next(tmp_path: Path):
    script = (
        "import sys, time\nfrom pipeline.run_guard import root_lock\n"
        "with root_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(600)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(PipelineBusyError, match=f"pid {holder.pid}"):
            start_and_end_a_run(tmp_path)
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        start_and_end_a_run(tmp_path)  # the kernel released the lock with the process
    finally:
        holder.kill()
