"""ML Metadata access, in one place: the store's connection, and walking its executions and artifacts.

Every reader of MLMD (the run report, lineage, the run guard, the baseline and
span lookups, the drift reference) goes through this module, so the store's
location and how events are read are decided once.
"""

from __future__ import annotations

import json
import os
from typing import Any

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2

from components.served_model import SERVED_VERSION_PROPERTY
from components.training_window import WINDOW_SOURCES_PROPERTY, WINDOW_SPANS_PROPERTY
from core.config import PipelineConfig
from core.errors import InputError, PipelineError
from core.versions import parse_version
from pipeline.nodes import SPAN_PLANNER

SPAN_PROPERTY = "span"
RETENTION_PROPERTY = "fmnist_retention"  # pipeline/retention.py notes what it removed, and when

OUTPUT_EVENTS = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)
INPUT_EVENTS = (metadata_store_pb2.Event.INPUT, metadata_store_pb2.Event.DECLARED_INPUT)
FINISHED = (metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.CACHED)
UNFINISHED = (metadata_store_pb2.Execution.NEW, metadata_store_pb2.Execution.RUNNING)
PIPELINE_CONTEXT, RUN_CONTEXT, NODE_CONTEXT = "pipeline", "pipeline_run", "node"


def connection_config(config: PipelineConfig) -> metadata_store_pb2.ConnectionConfig:
    """The ML Metadata connection of `config`'s pipeline: SQLite beside the artifacts, or MySQL.

    The MySQL fields are those of TFX's `mysql_metadata_connection_config`
    (plus a Unix socket); ML Metadata creates its tables in the database on
    first use.
    """
    connection = metadata_store_pb2.ConnectionConfig()
    mysql = config.mysql
    if mysql is None:
        connection.sqlite.filename_uri = config.metadata_path
        connection.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
        return connection
    connection.mysql.database = mysql.database
    connection.mysql.user = mysql.user
    connection.mysql.password = mysql.password
    if mysql.socket:
        connection.mysql.socket = mysql.socket
    else:
        connection.mysql.host, connection.mysql.port = mysql.host, mysql.port
    return connection


def store_exists(config: PipelineConfig) -> bool:
    """Whether a run could have recorded anything yet (a MySQL store is always there to ask)."""
    return config.mysql is not None or os.path.exists(config.metadata_path)


def open_store(config: PipelineConfig, read_only: bool = True) -> mlmd.MetadataStore:
    """The pipeline's MLMD store; `InputError` naming it when it does not exist or cannot be reached."""
    if not store_exists(config):
        raise InputError(f"{config.metadata_path}: no ML Metadata store; run the pipeline first")
    connection = connection_config(config)
    if config.mysql is None:
        connection.sqlite.connection_mode = (
            metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
            if read_only
            else metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE
        )
    try:
        return mlmd.MetadataStore(connection)
    except (mlmd.errors.StatusError, RuntimeError) as err:  # MySQL down or refusing: not the user's input
        raise PipelineError(f"ML Metadata at {config.metadata_location}: cannot be opened: {err}") from None


def executions_in_all_contexts(
    store: mlmd.MetadataStore, contexts: list[metadata_store_pb2.Context]
) -> list[metadata_store_pb2.Execution]:
    """The executions associated with every one of `contexts`, found by one ML Metadata filter query.

    Why: TFX 1.16's channel resolver (`channel_resolver._get_executions_by_all_contexts`,
    "TODO(b/234806996): Migrate to MLMD filter query") reads every execution of
    each context a channel names and intersects the sets. One of those contexts
    is the pipeline's, so each of a run's input channels reads the pipeline's
    whole history: on the year benchmark's day 61 (1,572 executions) that was 5.8
    of the run's 8 s outside its components, growing by a run's worth a day
    (the same growth as tensorflow/tfx#2424 and #3304 in the cache lookup). TFX's
    launcher already asks for the same set this way
    (`execution_lib.get_executions_associated_with_all_contexts`).
    """
    if not contexts:
        return []
    query = " AND ".join(f"contexts_{i}.id = {context.id}" for i, context in enumerate(contexts))
    return store.get_executions(list_options=mlmd.ListOptions(filter_query=query))


def value(proto_value: metadata_store_pb2.Value) -> Any:
    """The Python value of an MLMD property value (int, double, string, ...)."""
    kind = proto_value.WhichOneof("value")
    return getattr(proto_value, kind) if kind else None


def properties(item: metadata_store_pb2.Artifact | metadata_store_pb2.Execution) -> dict[str, Any]:
    """Properties and custom properties of an artifact or execution, as one dict."""
    values = {k: value(v) for k, v in item.custom_properties.items()}
    values.update({k: value(v) for k, v in item.properties.items()})
    return values


def span_of(artifact: metadata_store_pb2.Artifact) -> int:
    """An Examples artifact's span: ImportExampleGen 1.16 writes it as a custom property (once a string)."""
    for props in (artifact.custom_properties, artifact.properties):
        if SPAN_PROPERTY in props:
            found = value(props[SPAN_PROPERTY])
            return int(found) if found not in (None, "") else 0
    return 0


class Metadata:
    """Navigation over one pipeline's MLMD store: runs, nodes, producers, inputs and outputs."""

    def __init__(self, store: mlmd.MetadataStore, pipeline_name: str):
        self.store = store
        self.pipeline_name = pipeline_name

    @classmethod
    def open(cls, config: PipelineConfig, read_only: bool = True) -> Metadata:
        """`config`'s pipeline in its store (`open_store`: InputError when there is none yet)."""
        return cls(open_store(config, read_only), config.pipeline_name)

    def pipeline_context(self) -> metadata_store_pb2.Context | None:
        return self.store.get_context_by_type_and_name(PIPELINE_CONTEXT, self.pipeline_name)

    def runs(self) -> list[metadata_store_pb2.Context]:
        """This pipeline's `pipeline_run` contexts (children of its pipeline context), newest first."""
        runs = [
            run
            for run in self.store.get_contexts_by_type(RUN_CONTEXT)
            if any(p.name == self.pipeline_name for p in self.store.get_parent_contexts_by_context(run.id))
        ]
        return sorted(runs, key=lambda c: c.create_time_since_epoch, reverse=True)

    def latest_run(self) -> metadata_store_pb2.Context | None:
        """The newest `pipeline_run` context of this pipeline."""
        runs = self.runs()
        return runs[0] if runs else None

    def executions(self, context_id: int) -> list[metadata_store_pb2.Execution]:
        """A context's executions, oldest first."""
        return sorted(
            self.store.get_executions_by_context(context_id), key=lambda e: e.create_time_since_epoch
        )

    def node_of(self, execution_id: int) -> str:
        """The pipeline node (component id) an execution belongs to."""
        for context in self.store.get_contexts_by_execution(execution_id):
            if context.type == NODE_CONTEXT:
                return context.name.split(".", 1)[-1]
        return f"execution {execution_id}"

    def artifacts(self, execution_id: int, key: str | None = None, kinds=INPUT_EVENTS):
        """What an execution read (or, with `OUTPUT_EVENTS`, wrote), under one key or all keys."""
        ids = [
            e.artifact_id
            for e in self.store.get_events_by_execution_ids([execution_id])
            if e.type in kinds and (key is None or (e.path.steps and e.path.steps[0].key == key))
        ]
        return self.store.get_artifacts_by_id(ids) if ids else []

    def one(self, execution_id: int, key: str, kinds=INPUT_EVENTS) -> metadata_store_pb2.Artifact | None:
        found = self.artifacts(execution_id, key, kinds)
        return found[0] if found else None

    def outputs(self, execution_id: int, key: str | None = None) -> list[metadata_store_pb2.Artifact]:
        return self.artifacts(execution_id, key, OUTPUT_EVENTS)

    def producer(self, artifact: metadata_store_pb2.Artifact) -> metadata_store_pb2.Execution | None:
        """The execution that wrote an artifact (None for an artifact no execution wrote)."""
        events = [e for e in self.store.get_events_by_artifact_ids([artifact.id]) if e.type in OUTPUT_EVENTS]
        return self.store.get_executions_by_id([events[0].execution_id])[0] if events else None

    def consumers(
        self, artifact: metadata_store_pb2.Artifact, node: str
    ) -> list[metadata_store_pb2.Execution]:
        """Finished (complete or cached) executions of `node` that read `artifact`, oldest first."""
        ids = [
            e.execution_id
            for e in self.store.get_events_by_artifact_ids([artifact.id])
            if e.type in INPUT_EVENTS
        ]
        found = [
            e
            for e in self.store.get_executions_by_id(ids)
            if e.last_known_state in FINISHED and self.node_of(e.id) == node
        ]
        return sorted(found, key=lambda e: e.create_time_since_epoch)

    def consumer_of_all(
        self, artifacts: list[metadata_store_pb2.Artifact], node: str, key: str
    ) -> metadata_store_pb2.Execution | None:
        """The newest finished execution of `node` whose input under `key` was exactly `artifacts`."""
        wanted = {a.id for a in artifacts}
        runs = [
            e
            for e in self.consumers(artifacts[0], node)
            if {a.id for a in self.artifacts(e.id, key)} == wanted
        ]
        return runs[-1] if runs else None

    def pushed_models(self) -> dict[int, metadata_store_pb2.Artifact]:
        """Every version a Pusher of this store pushed, by version number."""
        found = {}
        for artifact in self.store.get_artifacts_by_type("PushedModel"):
            props = properties(artifact)
            version = parse_version(str(props.get("pushed_version", "")))
            if props.get("pushed") == 1 and version is not None:
                found[version] = artifact
        return found

    def run_of(self, execution: metadata_store_pb2.Execution) -> metadata_store_pb2.Context | None:
        """The `pipeline_run` context an execution belongs to."""
        found = [c for c in self.store.get_contexts_by_execution(execution.id) if c.type == RUN_CONTEXT]
        return found[0] if found else None

    def span_plan(self, execution: metadata_store_pb2.Execution) -> dict[str, Any]:
        """What the SpanPlanner of `execution`'s run decided, from its artifact's properties in ML Metadata
        (they outlive the artifact's files, which retention may remove); {} when there is no plan."""
        run = self.run_of(execution)
        planners = [e for e in (self.executions(run.id) if run else []) if self.node_of(e.id) == SPAN_PLANNER]
        plan = self.one(planners[-1].id, "plan", OUTPUT_EVENTS) if planners else None
        return properties(plan) if plan is not None else {}

    def window_sources(self, window: metadata_store_pb2.Artifact) -> list[metadata_store_pb2.Artifact]:
        """The span Examples artifacts a TrainingWindow holds, oldest span first."""
        sources = json.loads(properties(window).get(WINDOW_SOURCES_PROPERTY) or "{}")
        found = [self.store.get_artifacts_by_uri(uri) for uri in sources.values()]
        return sorted((a[0] for a in found if a), key=span_of)

    def node_executions(self, node: str) -> list[metadata_store_pb2.Execution]:
        """Every execution of one node of this pipeline, oldest first."""
        context = self.store.get_context_by_type_and_name(NODE_CONTEXT, f"{self.pipeline_name}.{node}")
        return self.executions(context.id) if context is not None else []

    def training_spans(self, model: metadata_store_pb2.Artifact) -> list[int]:
        """The spans a model was trained on: Model <- Trainer <- transformed examples <- Transform <- the
        TrainingWindow's Examples, whose `window_spans` property lists them."""
        trainer = self.producer(model)
        transformed = self.artifacts(trainer.id, "examples") if trainer else []
        transforms = [t for t in map(self.producer, transformed) if t is not None]
        windows = [w for t in transforms for w in self.artifacts(t.id, "examples")]
        return sorted({s for w in windows for s in window_spans(w)})


def served_model_text(model: metadata_store_pb2.Artifact | None) -> str | None:
    """ "version V (<uri>)" for a ServedModel artifact that holds a served version; None otherwise."""
    version = properties(model).get(SERVED_VERSION_PROPERTY) if model is not None else None
    return f"version {version} ({model.uri})" if version else None


def window_spans(examples: metadata_store_pb2.Artifact) -> list[int]:
    """The spans an Examples artifact holds: a TrainingWindow's list, else the artifact's own span."""
    listed = properties(examples).get(WINDOW_SPANS_PROPERTY)
    return json.loads(listed) if listed else [span_of(examples)]
