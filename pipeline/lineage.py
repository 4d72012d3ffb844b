"""Who made a pushed model: its lineage, read from ML Metadata (`fmnist lineage`, the drift reference).

From a pushed version the chain is walked backwards through MLMD events:
Pusher -> Evaluator (metrics, blessing, the served version it was measured
against) and ServingCheck -> Trainer (hyperparameters, module code
fingerprint, the served version it was warm-started from) -> Transform -> the
TrainingWindow's Examples and the spans it holds, each from SpanExampleGen
(input fingerprint, the span's manifest: where it came from and the SHA-256 of
each file) -> the curated schema (ImportSchemaGen) and the image-feature
statistics of the window (TrainingWindowImageStatistics: the drift report's
default reference). The data directory is the one the run's SpanPlanner read.
Forward from the push: the rollout history's entries that name the version
(pushed, promoted, rolled back, judged as a canary; `release/history.py`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import tensorflow as tf
from ml_metadata.proto import metadata_store_pb2

from core.config import PipelineConfig
from core.errors import InputError
from core.vocabulary import MANIFEST_NAME
from core.warm_start import read_warm_start
from pipeline import nodes
from pipeline.evaluation import accuracy_by_slice
from pipeline.metadata import (
    OUTPUT_EVENTS,
    RETENTION_PROPERTY,
    Metadata,
    properties,
    served_model_text,
    span_of,
)
from release.history import entries_for, format_entry, history_path, read_history
from release.rollout import served_version


class LineageError(InputError):
    """The version or a link of its chain is not in this pipeline's MLMD store."""


@dataclass(frozen=True)
class GateFacts:
    """A gate the pushed model passed: which node, whether it blessed, and what it measured."""

    node: str | None = None
    blessed: bool = False
    evaluation_uri: str | None = None
    accuracy: float | None = None
    baseline_model_uri: str | None = None  # the served model it was measured against


@dataclass(frozen=True)
class SpanFacts:
    """One span of the training window: its examples and where they came from."""

    span: int
    examples_uri: str
    example_gen_execution: int | None
    input_fingerprint: str | None
    source: str | None  # from the span's manifest
    examples: int | None = None  # images in the span (its manifest)
    file_sha256: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LineageChain:
    """The chain behind one pushed version, newest step first."""

    version: int
    pushed_destination: str
    pusher_execution: int
    model_uri: str
    trainer_execution: int
    hyperparameters: dict[str, Any]
    code_fingerprint: str | None
    warm_started_from: str | None
    evaluation: GateFacts
    serving_check: GateFacts
    transform_execution: int
    transform_graph_uri: str
    schema_uri: str
    schema_file: str | None
    spans: list[SpanFacts]
    gold_examples_uri: str | None
    data_dir: str | None
    source_checksums: dict[str, str] = field(default_factory=dict)
    image_statistics_uri: str | None = None
    image_statistics_bins: int | None = None
    removed: list[str] = field(default_factory=list)  # what retention removed of this chain, and when
    history_file: str | None = None  # the rollout's history (`release/history.py`)
    rollout_history: list[dict[str, Any]] = field(default_factory=list)  # its entries involving this version

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _read_json(path: str) -> dict[str, Any]:
    if not tf.io.gfile.exists(path):
        return {}
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def _manifest_checksums(data_dir: str) -> dict[str, str]:
    """SHA-256 of the source IDX files, from the manifest `fmnist data prepare` wrote beside the data."""
    splits = _read_json(os.path.join(data_dir, MANIFEST_NAME)).get("splits", {})
    return {
        f"{split} {kind}": digest
        for split, facts in splits.items()
        for kind, digest in facts.get("source_sha256", {}).items()
    }


def _required(found, what: str, version: int):
    if found is None:
        raise LineageError(f"version {version}: the store has no {what} on its chain")
    return found


def _span_facts(metadata: Metadata, examples: metadata_store_pb2.Artifact, data_dir: str | None) -> SpanFacts:
    example_gen = metadata.producer(examples)
    span = span_of(examples)
    manifest = _read_json(os.path.join(data_dir, f"span-{span}", MANIFEST_NAME)) if data_dir else {}
    return SpanFacts(
        span=span,
        examples_uri=examples.uri,
        example_gen_execution=example_gen.id if example_gen else None,
        input_fingerprint=properties(examples).get("input_fingerprint"),
        source=manifest.get("source"),
        examples=manifest.get("examples"),
        file_sha256=manifest.get("files", {}),
    )


def lineage_of(config: PipelineConfig, version: int | None = None) -> LineageChain:
    """The chain behind pushed `version` (default: the one serving production, the `stable` label)."""
    metadata = Metadata.open(config)
    version = version if version is not None else served_version(config.serving_dir, config.model_name)
    pushed = metadata.pushed_models()
    if version not in pushed:
        raise LineageError(
            f"version {version} was not pushed by the pipeline whose store is {config.metadata_location} "
            f"(pushed versions there: {sorted(pushed)})"
        )
    pusher = _required(metadata.producer(pushed[version]), "Pusher execution", version)
    model = _required(metadata.one(pusher.id, "model"), "model", version)
    trainer = _required(metadata.producer(model), "Trainer execution", version)
    transform_graph = _required(metadata.one(trainer.id, "transform_graph"), "transform graph", version)
    transform = _required(metadata.producer(transform_graph), "Transform execution", version)
    window = _required(metadata.one(transform.id, "examples"), "training window", version)
    schema = _required(metadata.one(transform.id, "schema"), "schema", version)
    schema_gen = metadata.producer(schema)
    statistics = metadata.consumer_of_all([window], nodes.TRAINING_WINDOW_IMAGE_STATISTICS, "examples")
    image_statistics = metadata.one(statistics.id, "statistics", OUTPUT_EVENTS) if statistics else None
    trainer_config = json.loads(properties(trainer).get("custom_config") or "{}")
    model_run = metadata.one(trainer.id, "model_run", OUTPUT_EVENTS)
    warm_start = read_warm_start(model_run.uri) if is_live(model_run) else None
    warm_started = warm_start is not None and warm_start.restored
    plan = metadata.span_plan(metadata.producer(window) or trainer)
    data_dir = plan.get("data_dir")
    evaluation = _gate_facts(metadata, pusher, "model_blessing")
    evaluator = metadata.producer(metadata.one(pusher.id, "model_blessing")) if evaluation.node else None
    gold = metadata.one(evaluator.id, "examples") if evaluator else None
    return LineageChain(
        version=version,
        pushed_destination=properties(pushed[version]).get("pushed_destination"),
        pusher_execution=pusher.id,
        model_uri=model.uri,
        trainer_execution=trainer.id,
        hyperparameters=trainer_config.get("training", {}),
        code_fingerprint=trainer_config.get("code_fingerprint"),
        warm_started_from=served_model_text(metadata.one(trainer.id, "base_model")) if warm_started else None,
        evaluation=evaluation,
        serving_check=_gate_facts(metadata, pusher, "infra_blessing"),
        transform_execution=transform.id,
        transform_graph_uri=transform_graph.uri,
        schema_uri=schema.uri,
        schema_file=properties(schema_gen).get("schema_file") if schema_gen else None,
        spans=[_span_facts(metadata, examples, data_dir) for examples in metadata.window_sources(window)],
        gold_examples_uri=gold.uri if gold else None,
        data_dir=data_dir,
        source_checksums=_manifest_checksums(data_dir) if data_dir else {},
        image_statistics_uri=image_statistics.uri if image_statistics else None,
        image_statistics_bins=properties(image_statistics).get("bins") if image_statistics else None,
        removed=removed_by_retention(metadata, [pushed[version], model, model_run, window, image_statistics]),
        history_file=history_path(config.serving_dir, config.model_name),
        rollout_history=entries_for(read_history(config.serving_dir, config.model_name), version),
    )


def is_live(artifact: metadata_store_pb2.Artifact | None) -> bool:
    """An artifact whose files are there to read (retention has not removed them)."""
    return artifact is not None and artifact.state == metadata_store_pb2.Artifact.LIVE


def removed_by_retention(metadata: Metadata, artifacts: list) -> list[str]:
    """What retention noted on the chain's artifacts: "version 17 removed from ... on <date>" and the like."""
    notes = []
    for artifact in (a for a in artifacts if a is not None):
        note = properties(artifact).get(RETENTION_PROPERTY)
        if note:
            notes.append(f"{artifact.type} {artifact.id}: {note}")
    return notes


def _gate_facts(metadata: Metadata, pusher: metadata_store_pb2.Execution, key: str) -> GateFacts:
    blessing = metadata.one(pusher.id, key)
    gate = metadata.producer(blessing) if blessing is not None else None
    if gate is None:
        return GateFacts()
    evaluation = metadata.one(gate.id, "evaluation", OUTPUT_EVENTS)
    baseline = served_model_text(metadata.one(gate.id, "baseline_model"))
    return GateFacts(
        node=metadata.node_of(gate.id),
        blessed=properties(blessing).get("blessed") == 1,
        evaluation_uri=evaluation.uri if evaluation is not None else None,
        accuracy=accuracy_by_slice(evaluation.uri).get("accuracy") if is_live(evaluation) else None,
        baseline_model_uri=baseline,
    )


def format_lineage(chain: LineageChain) -> str:
    """The chain as indented lines, newest step first."""
    evaluation = chain.evaluation
    accuracy = f"{evaluation.accuracy:.4f}" if evaluation.accuracy is not None else "unknown"
    against = evaluation.baseline_model_uri or "nothing (the first model)"
    lines = [
        f"version {chain.version} at {chain.pushed_destination}",
        *(f"  REMOVED: {note}" for note in chain.removed),
        f"  pushed by Pusher (execution {chain.pusher_execution})",
        f"  evaluated by {evaluation.node or '?'} on the gold test set {chain.gold_examples_uri}: "
        f"accuracy {accuracy}, blessed {'yes' if evaluation.blessed else 'no'}",
        f"    measured against the served model {against}",
        f"  serving check: {'passed' if chain.serving_check.blessed else 'not run or failed'}",
        f"  trained by Trainer (execution {chain.trainer_execution}): {chain.model_uri}",
        f"    warm-started from: {chain.warm_started_from or 'nothing (trained from scratch)'}",
        f"    hyperparameters: {json.dumps(chain.hyperparameters, sort_keys=True)}",
        f"    module code fingerprint: {chain.code_fingerprint}",
        f"  transformed by Transform (execution {chain.transform_execution}): {chain.transform_graph_uri}",
        f"  schema: {chain.schema_file} (artifact {chain.schema_uri})",
        f"  training window: spans {[s.span for s in chain.spans]} of {chain.data_dir}",
    ]
    for span in chain.spans:
        lines.append(
            f"    span {span.span} (SpanExampleGen execution {span.example_gen_execution}): "
            f"{span.source or 'no manifest'} -> {span.examples_uri}"
        )
        lines.extend(f"      {name}: sha256 {digest}" for name, digest in sorted(span.file_sha256.items()))
    for name, checksum in sorted(chain.source_checksums.items()):
        lines.append(f"  source {name}: sha256 {checksum}")
    lines.append(f"  image-feature statistics of the window: {chain.image_statistics_uri}")
    lines.append(f"  rollout history ({chain.history_file}, fmnist history --version {chain.version}):")
    lines.extend(f"    {format_entry(line)}" for line in chain.rollout_history)
    if not chain.rollout_history:
        lines.append("    no entry names this version")
    return "\n".join(lines)
