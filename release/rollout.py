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

A change reads and checks everything before it writes anything: a damaged
`rollout.json` or `models.config`, or a label that would move to a version
not on disk (its directory deleted, or without its `saved_model.pb`), is an
`InputError` naming the file or version, and neither file is touched.

The pair stays consistent across a crash: `rollout.json` is the record and
is renamed into place first; the model's entry in `models.config` is derived
from it. A process killed between the two renames leaves `models.config`
behind, and the next rollout command (a push, `promote`, `rollback` or
`labels`) finds the entry differing from what `rollout.json` derives and
re-publishes it before anything else.

- a push: the new version becomes `canary`; the first version ever pushed
  becomes `stable` as well (there is nothing to protect yet);
- `promote`: `stable` moves to the canary's version; the old stable is kept
  as the way back;
- `rollback`: `stable` moves back to the previous stable version, and the
  version rolled back from is taken out of service (the canary label follows
  stable);
- a canary verdict applied (`fmnist canary --apply`, `apply_verdict`): promote,
  or take the canary out of service (its label back on stable's version), or,
  for a hold, change nothing.

Each change, and each applied verdict, appends one line to the rollout's
history (`release/history.py`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
from collections.abc import Callable, Iterator

import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from core import storage
from core.canary_rule import HOLD, PROMOTE, ROLL_BACK, Verdict
from core.config import is_uri
from core.errors import InputError
from core.versions import has_saved_model, newest_version, version_dirs
from release import history
from serving.traffic_split import CANARY, STABLE

log = logging.getLogger(__name__)
ROLLOUT_FILE = "rollout.json"
MODELS_CONFIG = "models.config"
LOCK_FILE = ".rollout.lock"
WAY_BACK = (
    "way back"  # loaded for a rollback, not labelled; STABLE and CANARY are the labels the server routes by
)
HISTORY = "history"
HEADER = (
    "# Written by the pipeline's Pusher and by `fmnist promote` / `fmnist rollback`\n"
    "# (release/rollout.py); TF Serving's ModelServerConfig in text format.\n"
)


class RolloutError(InputError):
    """A promote or rollback that cannot be done; the message says what the state is or what is missing."""


@dataclasses.dataclass(frozen=True)
class Rollout:
    """The labels of one model; `history` holds the earlier stable versions, the newest last."""

    stable: int | None = None
    canary: int | None = None
    history: tuple[int, ...] = ()

    def served(self) -> list[int]:
        """Versions to keep loaded: stable, canary and the way back (the previous stable)."""
        return sorted(set(self.roles().values()))

    def roles(self) -> dict[str, int]:
        """Each version this state serves, by what it is to the rollout (stable, canary, way back)."""
        back = self.history[-1] if self.history else None
        named = ((STABLE, self.stable), (CANARY, self.canary), (WAY_BACK, back))
        return {name: version for name, version in named if version is not None}

    def labels(self) -> dict[str, int]:
        """The TF Serving version labels: stable and canary (the way back is loaded, not labelled)."""
        return {name: v for name, v in self.roles().items() if name in (STABLE, CANARY)}

    def describe(self) -> str:
        back = f", way back: {self.history[-1]}" if self.history else ", no way back yet"
        return f"stable {self.stable}, canary {self.canary}{back}"

    def to_json(self) -> dict:
        return {STABLE: self.stable, CANARY: self.canary, HISTORY: list(self.history)}


def rollout_path(serving_dir: str, model: str) -> str:
    return os.path.join(serving_dir, model, ROLLOUT_FILE)


def models_config_path(serving_dir: str) -> str:
    return os.path.join(serving_dir, MODELS_CONFIG)


def _is_version(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_rollout(data: bytes, path: str) -> Rollout:
    """The state in a `rollout.json`'s bytes; InputError naming `path` and the field when it is damaged."""
    if not data.strip():
        raise InputError(f"{path}: empty file; expected a JSON object with stable, canary and history")
    try:
        state = json.loads(data.decode("utf-8"))
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError both are
        raise InputError(f"{path}: not JSON ({err})") from None
    if not isinstance(state, dict):
        raise InputError(
            f"{path}: expected a JSON object with stable, canary and history, got a {type(state).__name__}"
        )
    for name in (STABLE, CANARY):
        if state.get(name) is not None and not _is_version(state[name]):
            raise InputError(f"{path}: '{name}' must be a version number or null, got {state[name]!r}")
    history = state.get(HISTORY, [])
    if not isinstance(history, list) or not all(_is_version(v) for v in history):
        raise InputError(f"{path}: '{HISTORY}' must be a list of version numbers, got {history!r}")
    return Rollout(state.get(STABLE), state.get(CANARY), tuple(history))


def _read(path: str) -> bytes | None:
    """A file's bytes, or None when it does not exist."""
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "rb") as f:
        return f.read()


def read_rollout(serving_dir: str, model: str) -> Rollout:
    """The model's rollout state (empty before the first push); InputError if `rollout.json` is damaged."""
    path = rollout_path(serving_dir, model)
    data = _read(path)
    return Rollout() if data is None else parse_rollout(data, path)


def served_version(serving_dir: str, model: str) -> int | None:
    """The version production traffic gets: the `stable` label, else the newest version on disk."""
    stable = read_rollout(serving_dir, model).stable
    return stable if stable is not None else newest_version(os.path.join(serving_dir, model))


def _loadable(versions: dict[int, str], version: int) -> bool:
    return version in versions and has_saved_model(versions[version])


def missing_on_disk(serving_dir: str, model: str, rollout: Rollout) -> dict[str, int]:
    """The versions `rollout` serves (by role) that have no version directory with a `saved_model.pb`.

    TF Serving cannot load those: a label on one answers NOT_FOUND, and a
    `specific` policy naming only missing versions unloads everything.
    """
    versions = version_dirs(os.path.join(serving_dir, model))
    return {role: v for role, v in rollout.roles().items() if not _loadable(versions, v)}


def _require_on_disk(serving_dir: str, model: str, version: int, role: str) -> None:
    """RolloutError unless `version` can be loaded: a label must never move to a version that is gone."""
    if not _loadable(version_dirs(os.path.join(serving_dir, model)), version):
        where = os.path.join(serving_dir, model, str(version), "saved_model.pb")
        raise RolloutError(
            f"{model}: version {version} ({role}) is not on disk (no {where}); nothing changed"
        )


def replace_file(path: str, text: str) -> None:
    """Write `text` to `path` so that readers see the old or the new content, never a mix (`core.storage`)."""
    storage.replace_text(path, text)


def read_models_config(serving_dir: str) -> model_server_config_pb2.ModelServerConfig:
    """`<serving_dir>/models.config`, parsed (empty when absent); InputError naming it when malformed."""
    path = models_config_path(serving_dir)
    config = model_server_config_pb2.ModelServerConfig()
    data = _read(path)
    if data is not None:
        try:
            text_format.Parse(data.decode("utf-8"), config)
        except (text_format.ParseError, UnicodeDecodeError) as err:
            raise InputError(f"{path}: not a valid ModelServerConfig ({err})") from None
    return config


def _with_rollout(
    config: model_server_config_pb2.ModelServerConfig, serving_dir: str, model: str, rollout: Rollout
) -> model_server_config_pb2.ModelServerConfig:
    """A copy of `config` whose entry for `model` serves what `rollout` says; other models kept.

    Only the fields the rollout owns are set (base path, platform, version
    policy, labels); anything else a person put in the entry is kept.
    """
    updated = model_server_config_pb2.ModelServerConfig()
    updated.CopyFrom(config)
    entries = updated.model_config_list.config
    entry = next((c for c in entries if c.name == model), None) or entries.add(name=model)
    entry.base_path = os.path.join(serving_dir, model)
    entry.model_platform = "tensorflow"
    entry.model_version_policy.Clear()
    entry.model_version_policy.specific.versions.extend(rollout.served())
    entry.version_labels.clear()
    entry.version_labels.update(rollout.labels())
    return updated


def _text(config: model_server_config_pb2.ModelServerConfig) -> str:
    return HEADER + text_format.MessageToString(config)


def models_config_text(serving_dir: str, model: str, rollout: Rollout) -> str:
    """`<serving_dir>/models.config` with this model's entry set from `rollout`; other models kept."""
    return _text(_with_rollout(read_models_config(serving_dir), serving_dir, model, rollout))


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


def _republish_if_behind(
    serving_dir: str, model: str, rollout: Rollout, config: model_server_config_pb2.ModelServerConfig
) -> str | None:
    """Re-publish the model's entry when it is not what `rollout` (the record) derives; say so, or None.

    The only way they differ is a change killed between its two renames (or
    a hand edit of this model's entry, which the next change would replace
    anyway); `models.config` is then behind, and what the server loads is
    not what `rollout.json` and `fmnist labels` say.
    """
    published = _with_rollout(config, serving_dir, model, rollout)
    if rollout == Rollout() or published == config:
        return None
    path = models_config_path(serving_dir)
    replace_file(path, _text(published))
    note = (
        f"{path}: re-published from {rollout_path(serving_dir, model)} ({rollout.describe()}); its "
        f"entry for '{model}' did not match (a change was interrupted between writing the two files)"
    )
    log.warning(note)
    return note


def republish_if_behind(serving_dir: str, model: str) -> str | None:
    """`models.config` made to agree with `rollout.json` again after an interrupted change (see above)."""
    if read_rollout(serving_dir, model) == Rollout():
        return None  # nothing pushed yet: nothing to publish, and no lock file to leave behind
    with _locked(serving_dir):
        rollout = read_rollout(serving_dir, model)
        return _republish_if_behind(serving_dir, model, rollout, read_models_config(serving_dir))


def _change(
    serving_dir: str,
    model: str,
    change: Callable[[Rollout], Rollout],
    action: str,
    reason: str,
    verdict: dict | None = None,
) -> Rollout:
    """Apply `change` to the state under the lock: read and check everything, then write both files.

    `rollout.json` goes first: killed before the second rename, the next
    command finds `models.config` behind and re-publishes it. The history
    line (`release/history.py`) comes last, still under the lock.
    """
    with _locked(serving_dir):
        current = read_rollout(serving_dir, model)
        config = read_models_config(serving_dir)
        _republish_if_behind(serving_dir, model, current, config)
        rollout = change(current)
        if rollout != current:
            config_text = _text(_with_rollout(config, serving_dir, model, rollout))
            replace_file(rollout_path(serving_dir, model), json.dumps(rollout.to_json(), indent=2) + "\n")
            replace_file(models_config_path(serving_dir), config_text)
        history.append(
            serving_dir, model, history.entry(action, current.to_json(), rollout.to_json(), reason, verdict)
        )
        return rollout


def push_canary(
    serving_dir: str, model: str, version: int, reason: str = "pushed by the pipeline"
) -> Rollout:
    """A newly pushed version becomes the canary (and stable too, when nothing is stable yet)."""

    def change(rollout: Rollout) -> Rollout:
        _require_on_disk(serving_dir, model, version, "the pushed version")
        return dataclasses.replace(
            rollout, canary=version, stable=rollout.stable if rollout.stable is not None else version
        )

    return _change(serving_dir, model, change, history.PUSH, reason)


def _promoted(serving_dir: str, model: str) -> Callable[[Rollout], Rollout]:
    def change(rollout: Rollout) -> Rollout:
        if rollout.canary is None or rollout.canary == rollout.stable:
            raise RolloutError(f"{model}: nothing to promote ({rollout.describe()})")
        _require_on_disk(serving_dir, model, rollout.canary, "the canary")
        return Rollout(rollout.canary, rollout.canary, (*rollout.history, rollout.stable))

    return change


def promote(serving_dir: str, model: str, reason: str = "") -> Rollout:
    """Move `stable` to the canary's version; the old stable becomes the way back."""
    return _change(serving_dir, model, _promoted(serving_dir, model), history.PROMOTE, reason)


def rollback(serving_dir: str, model: str, reason: str = "") -> Rollout:
    """Move `stable` back to the previous stable version; the version rolled back from leaves service."""

    def change(rollout: Rollout) -> Rollout:
        if not rollout.history:
            raise RolloutError(f"{model}: nothing to roll back to ({rollout.describe()})")
        previous = rollout.history[-1]
        _require_on_disk(serving_dir, model, previous, "the way back")
        return Rollout(previous, previous, rollout.history[:-1])

    return _change(serving_dir, model, change, history.ROLLBACK, reason)


def _canary_withdrawn(rollout: Rollout) -> Rollout:
    """The canary label back on stable: the canary's version leaves service, stable and the way back stay."""
    return dataclasses.replace(rollout, canary=rollout.stable)


def apply_verdict(serving_dir: str, model: str, verdict: Verdict, evidence: dict, reason: str) -> Rollout:
    """Act on a canary verdict and record it with its evidence: promote, take the canary out, or (hold) only
    record.

    Refused (RolloutError, nothing written) when the labels moved since the
    evidence was gathered: the verdict is about versions that are no longer
    the canary and stable.
    """
    actions = {
        PROMOTE: (history.PROMOTE, _promoted(serving_dir, model)),
        ROLL_BACK: (history.CANARY_ROLLBACK, _canary_withdrawn),
        HOLD: (history.VERDICT, lambda rollout: rollout),
    }
    action, act = actions[verdict.decision]
    judged = (evidence["canary_version"], evidence["stable_version"])

    def change(rollout: Rollout) -> Rollout:
        if (rollout.canary, rollout.stable) != judged:
            raise RolloutError(
                f"{model}: the labels moved since the verdict (judged canary {judged[0]} against stable "
                f"{judged[1]}; now {rollout.describe()}); nothing changed"
            )
        return act(rollout)

    record = {**dataclasses.asdict(verdict), "evidence": evidence}
    return _change(serving_dir, model, change, action, reason, record)
