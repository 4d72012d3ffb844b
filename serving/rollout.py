"""Staged rollout: which version is `stable`, which is `canary`, and the way back, as TF Serving labels.

The state of one model lives in `<serving_dir>/<model>/rollout.json` (TF
Serving skips non-numeric entries of a model directory), and is published as
the model's entry in `<serving_dir>/models.config`, TF Serving's own
`ModelServerConfig`: a `specific` version policy that keeps the stable, the
canary and the previous stable version loaded (so a rollback is instant), and
`version_labels` for `stable` and `canary`. Real TF Serving reads the file
with `--model_config_file` and re-reads it every
`--model_config_file_poll_wait_seconds`; `fmnist serve` does the same. Both
files are replaced atomically (written beside, then renamed over), so a reader
sees the old or the new file, never half of one; changes are serialised with
a lock file.

- a push: the new version becomes `canary`; the first version ever pushed
  becomes `stable` as well (there is nothing to protect yet);
- `promote`: `stable` moves to the canary's version; the old stable is kept
  as the way back;
- `rollback`: `stable` moves back to the previous stable version, and the
  version rolled back from is taken out of service (the canary label follows
  stable).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import uuid
from collections.abc import Iterator

import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from core.config import is_uri
from core.errors import InputError
from core.versions import newest_version

ROLLOUT_FILE = "rollout.json"
MODELS_CONFIG = "models.config"
LOCK_FILE = ".rollout.lock"
STABLE, CANARY = "stable", "canary"


class RolloutError(InputError):
    """A promote or rollback with nothing to do; the message says what the state is."""


@dataclasses.dataclass(frozen=True)
class Rollout:
    """The labels of one model; `history` holds the earlier stable versions, the newest last."""

    stable: int | None = None
    canary: int | None = None
    history: tuple[int, ...] = ()

    def served(self) -> list[int]:
        """Versions to keep loaded: stable, canary and the way back (the previous stable)."""
        versions = {self.stable, self.canary, self.history[-1] if self.history else None}
        return sorted(v for v in versions if v is not None)

    def labels(self) -> dict[str, int]:
        return {name: v for name, v in ((STABLE, self.stable), (CANARY, self.canary)) if v is not None}

    def describe(self) -> str:
        back = f", way back: {self.history[-1]}" if self.history else ", no way back yet"
        return f"stable {self.stable}, canary {self.canary}{back}"


def rollout_path(serving_dir: str, model: str) -> str:
    return os.path.join(serving_dir, model, ROLLOUT_FILE)


def models_config_path(serving_dir: str) -> str:
    return os.path.join(serving_dir, MODELS_CONFIG)


def read_rollout(serving_dir: str, model: str) -> Rollout:
    """The model's rollout state (empty before the first push)."""
    path = rollout_path(serving_dir, model)
    if not tf.io.gfile.exists(path):
        return Rollout()
    with tf.io.gfile.GFile(path) as f:
        data = json.load(f)
    return Rollout(data.get(STABLE), data.get(CANARY), tuple(data.get("history", ())))


def served_version(serving_dir: str, model: str) -> int | None:
    """The version production traffic gets: the `stable` label, else the newest version on disk."""
    stable = read_rollout(serving_dir, model).stable
    return stable if stable is not None else newest_version(os.path.join(serving_dir, model))


def replace_file(path: str, text: str) -> None:
    """Write `text` to `path` so that readers see the old or the new content, never a mix.

    Locally: a sibling temporary file renamed over the target. On an object
    store a single object write is already atomic.
    """
    if is_uri(path):
        with tf.io.gfile.GFile(path, "w") as f:
            f.write(text)
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    staging = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{uuid.uuid4().hex[:8]}")
    try:
        with open(staging, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(staging, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(staging)


def models_config_text(serving_dir: str, model: str, rollout: Rollout) -> str:
    """`<serving_dir>/models.config` with this model's entry set from `rollout`; other models kept."""
    config = model_server_config_pb2.ModelServerConfig()
    path = models_config_path(serving_dir)
    if tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path) as f:
            text_format.Parse(f.read(), config)
    entries = config.model_config_list.config
    entry = next((c for c in entries if c.name == model), None) or entries.add(name=model)
    entry.base_path = os.path.join(serving_dir, model)
    entry.model_platform = "tensorflow"
    entry.model_version_policy.Clear()
    entry.model_version_policy.specific.versions.extend(rollout.served())
    entry.version_labels.clear()
    entry.version_labels.update(rollout.labels())
    header = (
        "# Written by the pipeline's Pusher and by `fmnist promote` / `fmnist rollback`\n"
        "# (serving/rollout.py); TF Serving's ModelServerConfig in text format.\n"
    )
    return header + text_format.MessageToString(config)


@contextlib.contextmanager
def _locked(serving_dir: str) -> Iterator[None]:
    """One rollout change at a time on a local serving directory (object stores: no lock)."""
    if is_uri(serving_dir):
        yield
        return
    os.makedirs(serving_dir, exist_ok=True)
    with open(os.path.join(serving_dir, LOCK_FILE), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _publish(serving_dir: str, model: str, rollout: Rollout) -> None:
    state = {STABLE: rollout.stable, CANARY: rollout.canary, "history": list(rollout.history)}
    replace_file(rollout_path(serving_dir, model), json.dumps(state, indent=2) + "\n")
    replace_file(models_config_path(serving_dir), models_config_text(serving_dir, model, rollout))


def _change(serving_dir: str, model: str, change) -> Rollout:
    with _locked(serving_dir):
        rollout = change(read_rollout(serving_dir, model))
        _publish(serving_dir, model, rollout)
        return rollout


def push_canary(serving_dir: str, model: str, version: int) -> Rollout:
    """A newly pushed version becomes the canary (and stable too, when nothing is stable yet)."""
    return _change(
        serving_dir,
        model,
        lambda r: dataclasses.replace(
            r, canary=version, stable=r.stable if r.stable is not None else version
        ),
    )


def promote(serving_dir: str, model: str) -> Rollout:
    """Move `stable` to the canary's version; the old stable becomes the way back."""

    def change(rollout: Rollout) -> Rollout:
        if rollout.canary is None or rollout.canary == rollout.stable:
            raise RolloutError(f"{model}: nothing to promote ({rollout.describe()})")
        return Rollout(rollout.canary, rollout.canary, (*rollout.history, rollout.stable))

    return _change(serving_dir, model, change)


def rollback(serving_dir: str, model: str) -> Rollout:
    """Move `stable` back to the previous stable version; the version rolled back from leaves service."""

    def change(rollout: Rollout) -> Rollout:
        if not rollout.history:
            raise RolloutError(f"{model}: nothing to roll back to ({rollout.describe()})")
        previous = rollout.history[-1]
        return Rollout(previous, previous, rollout.history[:-1])

    return _change(serving_dir, model, change)
