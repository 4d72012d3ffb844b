"""Who made a pushed model: its lineage, read from MLMD (`fmnist lineage`).

From a pushed version the chain is walked backwards through MLMD events:
Pusher -> Evaluator (metrics, blessing) and ServingCheck -> Trainer
(hyperparameters, module code fingerprint) -> Transform -> ImportSchemaGen
(the curated schema file) and ImportExampleGen (input fingerprint, the source
IDX checksums from the data manifest) -> StatisticsGen (the training
statistics) and ImageFeatureStatistics (the image-feature statistics of the
training split: the drift report's default reference).
"""

from __future__ import annotations

import json
import os
from typing import Any

from ml_metadata.metadata_store import metadata_store as mlmd
from ml_metadata.proto import metadata_store_pb2

from components.dataset import MANIFEST_NAME
from pipeline.config import PipelineConfig
from pipeline.report import accuracy_by_slice, node_id, open_store

OUTPUT_EVENTS = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)
INPUT_EVENTS = (metadata_store_pb2.Event.INPUT, metadata_store_pb2.Event.DECLARED_INPUT)


class LineageError(LookupError):
    """The version or a link of its chain is not in this pipeline's MLMD store."""


def _value(value: metadata_store_pb2.Value) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def _properties(item) -> dict[str, Any]:
    values = {k: _value(v) for k, v in item.custom_properties.items()}
    values.update({k: _value(v) for k, v in item.properties.items()})
    return values


class Lineage:
    """Navigation over one MLMD store: producers and inputs of artifacts and executions."""

    def __init__(self, store: mlmd.MetadataStore):
        self.store = store

    def producer(self, artifact: metadata_store_pb2.Artifact) -> metadata_store_pb2.Execution:
        events = [e for e in self.store.get_events_by_artifact_ids([artifact.id]) if e.type in OUTPUT_EVENTS]
        if not events:
            raise LineageError(f"artifact {artifact.id} ({artifact.type}) has no producing execution")
        return self.store.get_executions_by_id([events[0].execution_id])[0]

    def artifacts(self, execution_id: int, key: str, kinds=INPUT_EVENTS) -> list[metadata_store_pb2.Artifact]:
        """The artifacts an execution read (or, with `OUTPUT_EVENTS`, wrote) under one key."""
        ids = [
            e.artifact_id
            for e in self.store.get_events_by_execution_ids([execution_id])
            if e.type in kinds and e.path.steps and e.path.steps[0].key == key
        ]
        return self.store.get_artifacts_by_id(ids) if ids else []

    def one(self, execution_id: int, key: str, kinds=INPUT_EVENTS) -> metadata_store_pb2.Artifact | None:
        found = self.artifacts(execution_id, key, kinds)
        return found[0] if found else None

    def consumers(
        self, artifact: metadata_store_pb2.Artifact, node: str
    ) -> list[metadata_store_pb2.Execution]:
        """Completed or cached executions of `node` that read `artifact`."""
        ids = [
            e.execution_id
            for e in self.store.get_events_by_artifact_ids([artifact.id])
            if e.type in INPUT_EVENTS
        ]
        done = (metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.CACHED)
        return [
            e
            for e in self.store.get_executions_by_id(ids)
            if e.last_known_state in done and node_id(self.store, e.id) == node
        ]

    def output_of_consumer(
        self, artifact: metadata_store_pb2.Artifact, node: str, key: str
    ) -> metadata_store_pb2.Artifact | None:
        """What the newest finished execution of `node` that read `artifact` wrote under `key`."""
        runs = self.consumers(artifact, node)
        return self.one(runs[-1].id, key, OUTPUT_EVENTS) if runs else None

    def node(self, execution: metadata_store_pb2.Execution) -> str:
        return node_id(self.store, execution.id)


def pushed_models(store: mlmd.MetadataStore) -> dict[int, metadata_store_pb2.Artifact]:
    """Every pushed version recorded in the store, by version number."""
    found = {}
    for artifact in store.get_artifacts_by_type("PushedModel"):
        props = _properties(artifact)
        if props.get("pushed") == 1 and str(props.get("pushed_version", "")).isdigit():
            found[int(props["pushed_version"])] = artifact
    return found


def served_version(config: PipelineConfig) -> int | None:
    """The version TF Serving's "latest" policy serves: the highest numeric directory pushed."""
    directory = config.model_serving_dir
    if not os.path.isdir(directory):
        return None
    versions = [int(v) for v in os.listdir(directory) if v.isdigit()]
    return max(versions, default=None)


def _manifest_checksums(input_base: str) -> dict[str, str]:
    """SHA-256 of the source IDX files, from the manifest `fmnist data prepare` wrote beside the data."""
    path = os.path.join(input_base, MANIFEST_NAME)
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        splits = json.load(f).get("splits", {})
    return {
        f"{split} {kind}": digest
        for split, facts in splits.items()
        for kind, digest in facts.get("source_sha256", {}).items()
    }


def lineage_of(config: PipelineConfig, version: int | None = None) -> dict[str, Any]:
    """The chain behind pushed `version` (default: the served one), as plain data."""
    if not os.path.exists(config.metadata_path):
        raise LineageError(f"{config.metadata_path}: no MLMD store; run the pipeline first")
    store = open_store(config)
    version = version if version is not None else served_version(config)
    pushed = pushed_models(store)
    if version not in pushed:
        raise LineageError(
            f"version {version} was not pushed by the pipeline whose store is {config.metadata_path} "
            f"(pushed versions there: {sorted(pushed)})"
        )
    lineage = Lineage(store)
    pusher = lineage.producer(pushed[version])
    model = lineage.one(pusher.id, "model")
    trainer = lineage.producer(model)
    transform_graph = lineage.one(trainer.id, "transform_graph")
    transform = lineage.producer(transform_graph)
    raw_examples = lineage.one(transform.id, "examples")
    example_gen = lineage.producer(raw_examples)
    schema = lineage.one(transform.id, "schema")
    schema_gen = lineage.producer(schema)
    statistics = lineage.output_of_consumer(raw_examples, "StatisticsGen", "statistics")
    image_statistics = lineage.output_of_consumer(raw_examples, "ImageFeatureStatistics", "statistics")

    chain: dict[str, Any] = {
        "version": version,
        "pushed": {
            "destination": _properties(pushed[version]).get("pushed_destination"),
            "execution": pusher.id,
        },
        "model": {"uri": model.uri, "trainer_execution": trainer.id, **_trainer_facts(trainer)},
        "evaluation": _gate_facts(lineage, pusher, "model_blessing"),
        "serving_check": _gate_facts(lineage, pusher, "infra_blessing"),
        "transform": {"execution": transform.id, "transform_graph": transform_graph.uri},
        "schema": {"uri": schema.uri, "schema_file": _properties(schema_gen).get("schema_file")},
        "examples": {
            "uri": raw_examples.uri,
            "execution": example_gen.id,
            "input_base": _properties(example_gen).get("input_base"),
            "input_fingerprint": _properties(example_gen).get("input_fingerprint"),
            "source_checksums": _manifest_checksums(_properties(example_gen).get("input_base", "")),
        },
        "statistics": {"uri": statistics.uri if statistics else None},
        "image_statistics": {
            "uri": image_statistics.uri if image_statistics else None,
            "bins": _properties(image_statistics).get("bins") if image_statistics else None,
        },
    }
    return chain


def _trainer_facts(trainer: metadata_store_pb2.Execution) -> dict[str, Any]:
    config = json.loads(_properties(trainer).get("custom_config") or "{}")
    return {"hyperparameters": config.get("training", {}), "code_fingerprint": config.get("code_fingerprint")}


def _gate_facts(lineage: Lineage, pusher: metadata_store_pb2.Execution, key: str) -> dict[str, Any]:
    blessing = lineage.one(pusher.id, key)
    if blessing is None:
        return {}
    gate = lineage.producer(blessing)
    facts = {"node": lineage.node(gate), "blessed": _properties(blessing).get("blessed") == 1}
    evaluation = lineage.one(gate.id, "evaluation", OUTPUT_EVENTS)
    if evaluation is not None:
        facts["evaluation_uri"] = evaluation.uri
        facts["accuracy"] = accuracy_by_slice(evaluation.uri).get("accuracy")
    return facts


def format_lineage(chain: dict[str, Any]) -> str:
    """The chain as indented lines, newest step first."""
    model, evaluation, examples = chain["model"], chain["evaluation"], chain["examples"]
    blessed = "yes" if evaluation.get("blessed") else "no"
    accuracy = f"{evaluation['accuracy']:.4f}" if evaluation.get("accuracy") is not None else "unknown"
    lines = [
        f"version {chain['version']} at {chain['pushed']['destination']}",
        f"  pushed by Pusher (execution {chain['pushed']['execution']})",
        f"  evaluated by {evaluation.get('node', '?')}: accuracy " f"{accuracy}, blessed {blessed}",
        f"  serving check: {'passed' if chain['serving_check'].get('blessed') else 'not run or failed'}",
        f"  trained by Trainer (execution {model['trainer_execution']}): {model['uri']}",
        f"    hyperparameters: {json.dumps(model['hyperparameters'], sort_keys=True)}",
        f"    module code fingerprint: {model['code_fingerprint']}",
        f"  transformed by Transform (execution {chain['transform']['execution']})",
        f"  schema: {chain['schema']['schema_file']}",
        f"  examples from ImportExampleGen (execution {examples['execution']}): {examples['input_base']}",
        f"    input fingerprint: {str(examples['input_fingerprint']).replace(chr(10), '; ')}",
    ]
    for name, checksum in sorted((examples.get("source_checksums") or {}).items()):
        lines.append(f"    source {name}: {checksum}")
    lines.append(f"  training statistics (StatisticsGen): {chain['statistics']['uri']}")
    lines.append(f"  image-feature statistics (ImageFeatureStatistics): {chain['image_statistics']['uri']}")
    return "\n".join(lines)
