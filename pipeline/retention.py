"""Retention: what a pipeline keeps of earlier runs' outputs, and deleting the rest so the disk does not fill.

TFX 1.16's open-source orchestrators never delete an artifact
(tensorflow/tfx-addons#179), so every run's outputs would stay forever. After
each run (and with `fmnist retention`) everything under the pipeline root that
no rule keeps is deleted. Kept (`RetentionConfig`):

- every artifact the newest `keep_runs` runs made or used (a cached step uses
  the outputs of the run that made them), and every artifact made within
  `keep_days`: a rerun with nothing new stays cached;
- the lineage of every version the serving directory keeps: the stable, the
  canary, the way back (the previous stable), the newest `keep_versions`
  pushes and the last `keep_versions` earlier stables; the lineage is every
  artifact those pushes were made from, back to the spans (with every output
  of each step on the way, and the training window's image statistics, the
  drift report's reference), so `fmnist lineage` and `fmnist drift` work for
  each of them;
- the Examples of every span that can still join a training window (the span
  ledger's newest usable spans within the window bounds);
- ML Metadata itself and the span ledger (the audit trail), the data
  directory (never touched), the intake (one span).

The rest goes: artifacts (marked in ML Metadata: `MARKED_FOR_DELETION`
first, then their files, then `DELETED`, with the date in the custom property
`fmnist_retention`; TFX never reuses a cached output that is not LIVE, so a
later run recomputes instead), model versions no rule keeps (renamed to a
name TF Serving skips, then deleted), output directories of executions that
failed or were killed (never published), run reports of runs no rule keeps,
and cached drift references beyond the newest `keep_drift_references`. A run
killed during clean-up leaves artifacts `MARKED_FOR_DELETION`, a renamed
version or a half-deleted directory; the next clean-up finishes each.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import time
from collections.abc import Iterable

import tensorflow as tf
from ml_metadata.proto import metadata_store_pb2

from components.artifacts import DataDirectory
from components.training_window import WINDOW_SOURCES_PROPERTY
from core.config import PipelineConfig
from core.ledger import ACCEPTED, read_ledger
from core.span_rules import SpanHistory, window
from core.versions import version_dirs
from core.vocabulary import DRIFT_REFERENCE_DIR
from pipeline.metadata import (
    INPUT_EVENTS,
    OUTPUT_EVENTS,
    RETENTION_PROPERTY,
    Metadata,
    properties,
    store_exists,
)
from pipeline.report import REPORTS_DIR
from release.rollout import read_rollout

REMOVED_PREFIX = ".removed-"  # a version being deleted: TF Serving skips names that are not numbers
LIVE = metadata_store_pb2.Artifact.LIVE
MARKED = metadata_store_pb2.Artifact.MARKED_FOR_DELETION
DELETED = metadata_store_pb2.Artifact.DELETED
UNPUBLISHED = (metadata_store_pb2.Execution.FAILED, metadata_store_pb2.Execution.CANCELED)
MODEL_VERSION, HALF_DELETED_VERSION = "model version", "a version half deleted"
VERSION_REMOVALS = (MODEL_VERSION, HALF_DELETED_VERSION)


@dataclasses.dataclass(frozen=True)
class Removal:
    """One thing retention deletes: what it is, where, how many bytes, and its artifact or version."""

    what: str
    path: str
    size: int
    artifact_id: int | None = None
    version: int | None = None


@dataclasses.dataclass(frozen=True)
class RetentionPlan:
    removals: tuple[Removal, ...]
    kept_artifacts: int
    kept_versions: tuple[int, ...]

    @property
    def bytes(self) -> int:
        return sum(r.size for r in self.removals)

    def describe(self) -> str:
        """One line: how much goes, and what is kept."""
        return (
            f"retention: {len(self.removals)} removed ({self.bytes / 2**20:.1f} MB); kept "
            f"{self.kept_artifacts} artifacts and versions {list(self.kept_versions)}"
        )


def tree_size(path: str) -> int:
    """Bytes under `path` (a file or a directory; 0 when it is gone). Hard links are counted each time."""
    if not tf.io.gfile.exists(path):
        return 0
    if not tf.io.gfile.isdir(path):
        return tf.io.gfile.stat(path).length
    return sum(
        tf.io.gfile.stat(os.path.join(directory, name)).length
        for directory, _, names in tf.io.gfile.walk(path)
        for name in names
    )


def remove_path(path: str) -> None:
    if tf.io.gfile.exists(path):
        tf.io.gfile.rmtree(path) if tf.io.gfile.isdir(path) else tf.io.gfile.remove(path)


# --- what stays ------------------------------------------------------------------------------------
def kept_versions(config: PipelineConfig) -> set[int]:
    """Versions the serving directory keeps: labelled, the way back, the newest pushes and earlier stables."""
    rollout = read_rollout(config.serving_dir, config.model_name)
    keep = config.retention.keep_versions
    newest = sorted(version_dirs(config.model_serving_dir))[-keep:] if keep else []
    earlier_stables = list(rollout.history)[-keep:] if keep else []
    return set(rollout.roles().values()) | set(newest) | set(earlier_stables)


def _touched_by_runs(meta: Metadata, runs: Iterable[metadata_store_pb2.Context]) -> set[int]:
    executions = [e.id for run in runs for e in meta.store.get_executions_by_context(run.id)]
    events = meta.store.get_events_by_execution_ids(executions) if executions else []
    return {e.artifact_id for e in events}


def _lineage(meta: Metadata, artifact_ids: set[int]) -> set[int]:
    """Every artifact `artifact_ids` were made from, with every output of each step on the way."""
    found, frontier = set(artifact_ids), set(artifact_ids)
    while frontier:
        events = meta.store.get_events_by_artifact_ids(list(frontier))
        producers = {e.execution_id for e in events if e.type in OUTPUT_EVENTS}
        step_events = meta.store.get_events_by_execution_ids(list(producers)) if producers else []
        frontier = {e.artifact_id for e in step_events} - found
        found |= frontier
    return found


def _window_extras(meta: Metadata, artifacts: dict, ids: set[int]) -> set[int]:
    """For each training window among `ids`: the span Examples it holds and what was computed from it."""
    extra = set()
    windows = [artifacts[i] for i in ids if i in artifacts]
    for window_examples in (w for w in windows if properties(w).get(WINDOW_SOURCES_PROPERTY)):
        extra |= {a.id for a in meta.window_sources(window_examples)}
        events = meta.store.get_events_by_artifact_ids([window_examples.id])
        consumers = {e.execution_id for e in events if e.type in INPUT_EVENTS}
        outputs = meta.store.get_events_by_execution_ids(list(consumers)) if consumers else []
        extra |= {e.artifact_id for e in outputs if e.type in OUTPUT_EVENTS}
    return extra


def _served_lineage(meta: Metadata, versions: set[int], artifacts) -> set[int]:
    pushed = meta.pushed_models()
    roots = {pushed[v].id for v in versions if v in pushed}
    lineage = _lineage(meta, roots)
    return lineage | _lineage(meta, _window_extras(meta, artifacts, lineage))


def _window_examples(config: PipelineConfig, uris: dict[str, int]) -> set[int]:
    """The span Examples that can still join a window (the newest usable spans within the bounds)."""
    records = read_ledger(config.span_ledger)
    history = SpanHistory.of(records)
    if not history.usable:
        return set()
    bounds = (config.spans.window_spans, config.spans.window_images)
    spans = window(max(history.usable) + 1, history, *bounds, before=True)
    accepted = {r.span: r.examples for r in records if r.event == ACCEPTED}
    return {uris[accepted[s]] for s in spans if accepted.get(s) in uris}


def _kept_artifacts(
    config: PipelineConfig, meta: Metadata, artifacts: dict, versions: set[int], now: float
) -> set[int]:
    policy = config.retention
    keep = _touched_by_runs(meta, meta.runs()[: policy.keep_runs])
    cutoff_ms = (now - policy.keep_days * 86400) * 1000
    keep |= {a.id for a in artifacts.values() if a.create_time_since_epoch >= cutoff_ms}
    keep |= _served_lineage(meta, versions, artifacts)
    keep |= _window_examples(config, {a.uri: a.id for a in artifacts.values()})
    return keep


# --- the plan --------------------------------------------------------------------------------------
def _under(root: str, path: str) -> bool:
    return bool(path) and os.path.normpath(path).startswith(os.path.normpath(root) + os.sep)


def _artifact_removals(config: PipelineConfig, meta: Metadata, artifacts, keep: set[int]) -> list[Removal]:
    removals = []
    for artifact in sorted(artifacts.values(), key=lambda a: a.id):
        if artifact.id in keep or artifact.state != LIVE or artifact.type == DataDirectory.TYPE_NAME:
            continue
        if not _under(config.pipeline_root, artifact.uri):  # never anything outside the pipeline root
            continue
        what = f"{artifact.type} {artifact.id}"
        removals.append(Removal(what, artifact.uri, tree_size(artifact.uri), artifact.id))
    return removals


def _version_removals(config: PipelineConfig, keep: set[int]) -> list[Removal]:
    found = [
        Removal(f"{MODEL_VERSION} {version}", path, tree_size(path), version=version)
        for version, path in sorted(version_dirs(config.model_serving_dir).items())
        if version not in keep
    ]
    leftovers = tf.io.gfile.glob(os.path.join(config.model_serving_dir, f"{REMOVED_PREFIX}*"))
    return found + [Removal(HALF_DELETED_VERSION, p, tree_size(p)) for p in leftovers]


def _unpublished_removals(config: PipelineConfig, meta: Metadata) -> list[Removal]:
    pipeline = meta.pipeline_context()
    executions = meta.executions(pipeline.id) if pipeline else []
    executions = [e for e in executions if e.last_known_state in UNPUBLISHED]
    removals = []
    for execution in executions:
        node = meta.node_of(execution.id)
        for pattern in (f"{node}/*/{execution.id}", f"{node}/.system/*/{execution.id}"):
            for path in tf.io.gfile.glob(os.path.join(config.pipeline_root, pattern)):
                removals.append(Removal(f"unpublished output of {node}", path, tree_size(path)))
    return removals


def _report_removals(config: PipelineConfig, kept_runs: set[str]) -> list[Removal]:
    directory = os.path.join(config.pipeline_root, REPORTS_DIR)
    if not tf.io.gfile.isdir(directory):
        return []
    names = {run.replace(":", "-").replace("/", "_") for run in kept_runs}
    return [
        Removal("run report", os.path.join(directory, name), tree_size(os.path.join(directory, name)))
        for name in sorted(tf.io.gfile.listdir(directory))
        if not any(name.startswith(n) for n in names)
    ]


def _drift_cache_removals(config: PipelineConfig) -> list[Removal]:
    directory = os.path.join(config.pipeline_root, DRIFT_REFERENCE_DIR)
    if not tf.io.gfile.isdir(directory):
        return []
    entries = [os.path.join(directory, n.rstrip("/")) for n in tf.io.gfile.listdir(directory)]
    newest = sorted(entries, key=lambda p: tf.io.gfile.stat(p).mtime_nsec, reverse=True)
    old = newest[config.retention.keep_drift_references :]
    return [Removal("cached drift reference", path, tree_size(path)) for path in old]


def plan_retention(config: PipelineConfig, now: float | None = None) -> RetentionPlan:
    """What retention would delete now (nothing is deleted; `apply_retention` does it)."""
    versions = kept_versions(config)
    removals = [*_version_removals(config, versions), *_drift_cache_removals(config)]
    meta = Metadata.open(config) if store_exists(config) else None
    pipeline = meta.pipeline_context() if meta is not None else None
    if pipeline is None:  # nothing has run yet: no artifacts, reports or executions to look at
        return RetentionPlan(tuple(removals), 0, tuple(sorted(versions)))
    now = time.time() if now is None else now
    artifacts = {a.id: a for a in meta.store.get_artifacts_by_context(pipeline.id)}
    keep = _kept_artifacts(config, meta, artifacts, versions, now)
    cutoff_ms = (now - config.retention.keep_days * 86400) * 1000
    runs = meta.runs()
    kept_runs = {r.name for i, r in enumerate(runs) if i < config.retention.keep_runs}
    kept_runs |= {r.name for r in runs if r.create_time_since_epoch >= cutoff_ms}
    removals += [
        *_artifact_removals(config, meta, artifacts, keep),
        *_unpublished_removals(config, meta),
        *_report_removals(config, kept_runs),
    ]
    return RetentionPlan(tuple(removals), len(keep & set(artifacts)), tuple(sorted(versions)))


# --- doing it --------------------------------------------------------------------------------------
def _mark(meta: Metadata | None, ids: list[int], state: int, note: str) -> None:
    if meta is None or not ids:
        return
    artifacts = meta.store.get_artifacts_by_id(ids)
    for artifact in artifacts:
        artifact.state = state
        artifact.custom_properties[RETENTION_PROPERTY].string_value = note
    if artifacts:
        meta.store.put_artifacts(artifacts)


def _finish_marked(meta: Metadata, pipeline_id: int, today: str) -> int:
    """Artifacts a killed clean-up marked but did not finish: their files go, they become DELETED."""
    marked = [a for a in meta.store.get_artifacts_by_context(pipeline_id) if a.state == MARKED]
    for artifact in marked:
        remove_path(artifact.uri)
    _mark(meta, [a.id for a in marked], DELETED, f"removed by retention on {today}")
    return len(marked)


def _remove_version(path: str) -> None:
    """Rename a version to a name TF Serving skips, then delete it: it is never seen half deleted."""
    if os.path.basename(path).startswith(REMOVED_PREFIX):
        remove_path(path)
        return
    hidden = os.path.join(os.path.dirname(path), f"{REMOVED_PREFIX}{os.path.basename(path)}")
    tf.io.gfile.rename(path, hidden, overwrite=True)
    remove_path(hidden)


def apply_retention(config: PipelineConfig, now: float | None = None) -> RetentionPlan:
    """Delete what `plan_retention` lists (see the module docstring for the order); return the plan."""
    today = datetime.date.today().isoformat()
    meta = Metadata.open(config, read_only=False) if store_exists(config) else None
    pipeline = meta.pipeline_context() if meta is not None else None
    if pipeline is not None:
        _finish_marked(meta, pipeline.id, today)
    plan = plan_retention(config, now)
    artifact_ids = [r.artifact_id for r in plan.removals if r.artifact_id is not None]
    _mark(meta, artifact_ids, MARKED, f"marked for deletion by retention on {today}")  # first: see above
    for removal in plan.removals:
        if removal.what.startswith(VERSION_REMOVALS):
            _remove_version(removal.path)
        else:
            remove_path(removal.path)
    _mark(meta, artifact_ids, DELETED, f"removed by retention on {today}")
    if meta is not None:
        _note_removed_versions(meta, [r for r in plan.removals if r.version is not None], today)
    return plan


def _note_removed_versions(meta: Metadata, removals: list[Removal], today: str) -> None:
    """On each removed version's PushedModel: when its version directory left the serving directory."""
    pushed = meta.pushed_models()
    artifacts = [pushed[r.version] for r in removals if r.version in pushed]
    for artifact, removal in zip(artifacts, [r for r in removals if r.version in pushed], strict=True):
        artifact.custom_properties[
            RETENTION_PROPERTY
        ].string_value = f"version {removal.version} removed from {removal.path} by retention on {today}"
    if artifacts:
        meta.store.put_artifacts(artifacts)
