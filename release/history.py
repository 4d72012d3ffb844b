"""The rollout's audit trail: one JSON line per change of the labels, appended beside `rollout.json`.

`<serving_dir>/<model>/rollout_history.jsonl` gets a line for every push, promote,
rollback and automatic canary verdict (`fmnist canary --apply`, a hold
too): the time (UTC), who (user@host), the reason given (`--reason`), the
action, the labels before and after, and for a verdict its decision, reasons
and evidence. Written by `release/rollout.py` under the rollout lock, after
`rollout.json`: a change killed between the two is in `rollout.json` but has
no line.

Append-only. A local file is opened with O_APPEND and each line goes out in
one `write` and is fsynced, so concurrent writers never interleave within a
line and a crash can only cut the last line short; reading skips such a torn
line with a warning naming the file and line. Object stores (gs://) have no append: the file is read
and written back whole, which the rollout lock does not cover there.
"""

from __future__ import annotations

import datetime
import getpass
import json
import logging
import os
import socket
from typing import Any

from core import storage
from core.config import is_uri

log = logging.getLogger(__name__)
HISTORY_FILE = "rollout_history.jsonl"
PUSH, PROMOTE, ROLLBACK, CANARY_ROLLBACK, VERDICT = (
    "push",
    "promote",
    "rollback",
    "canary rollback",
    "verdict",
)


def history_path(serving_dir: str, model: str) -> str:
    return os.path.join(serving_dir, model, HISTORY_FILE)


def who() -> str:
    """user@host of this process, for the record."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid (some containers)
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def entry(action: str, before: dict, after: dict, reason: str, verdict: dict | None = None) -> dict[str, Any]:
    """One history line as a dict: when, who, why, what, the labels before and after, a verdict's evidence."""
    line = {
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "who": who(),
        "reason": reason,
        "action": action,
        "before": before,
        "after": after,
    }
    if verdict is not None:
        line["verdict"] = verdict
    return line


def append(serving_dir: str, model: str, line: dict[str, Any]) -> None:
    """Append one JSON line (see the module docstring for how it stays whole)."""
    path = history_path(serving_dir, model)
    data = (json.dumps(line, sort_keys=True) + "\n").encode("utf-8")
    if is_uri(path):
        old = storage.read_bytes(path) if storage.exists(path) else b""
        storage.write_bytes(path, old + data)
        return
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data  # after a torn line: end it, so that it stays the only one skipped
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_history(serving_dir: str, model: str) -> list[dict[str, Any]]:
    """Every entry, oldest first ([] before the first change); a torn line is skipped with a warning.

    A torn line is the last one, or one a later append ended with a newline
    (so that the next entry starts a line of its own).
    """
    path = history_path(serving_dir, model)
    if not storage.exists(path):
        return []
    entries = []
    for number, text in enumerate(storage.read_bytes(path).decode("utf-8", errors="replace").splitlines(), 1):
        try:
            line = json.loads(text)
        except ValueError:
            line = None
        if not isinstance(line, dict):
            log.warning("%s: line %d is cut short or damaged (an interrupted write); skipped", path, number)
            continue
        entries.append(line)
    return entries


def entries_for(entries: list[dict[str, Any]], version: int) -> list[dict[str, Any]]:
    """The entries whose labels before or after involve `version` (as stable or canary)."""

    def involves(state: dict) -> bool:
        return version in (state.get("stable"), state.get("canary"))

    return [e for e in entries if involves(e.get("before", {})) or involves(e.get("after", {}))]


def format_entry(line: dict[str, Any]) -> str:
    """One entry on one line for people."""

    def labels(state: dict) -> str:
        return f"stable {state.get('stable')}, canary {state.get('canary')}"

    change = f"{labels(line['before'])} -> {labels(line['after'])}"
    text = f"{line['time']}  {line['who']}  {line['action']}: {change}"
    if line.get("verdict"):
        text += f"  [{line['verdict']['decision']}: {'; '.join(line['verdict']['reasons'])}]"
    return text + (f"  reason: {line['reason']}" if line.get("reason") else "")
