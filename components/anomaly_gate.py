"""AnomalyGate: stop the run when ExampleValidator found anomalies against the curated schema.

ExampleValidator only records anomalies; it never stops a pipeline. This
component reads its outputs (the new span's and the gold test set's) and fails
when any split has an anomaly, naming each feature and TFDV's description of
the broken constraint. Everything after it (the drift gate, Transform,
Trainer) is wired downstream of it (`pipeline/definition.py`), so bad data never
reaches them and nothing is pushed. A span that breaks the schema is recorded
as refused in the span ledger (`core/ledger.py`) and never trained on; a
broken gold test set stops the run without blaming the span (it runs again
once the gold set is fixed).
"""

import os

from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2
from tfx import types
from tfx.components.example_validator.executor import DEFAULT_FILE_NAME
from tfx.dsl.component.experimental.annotations import InputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts
from tfx.utils import io_utils

from components.loop_state import record_refusal
from core.errors import PipelineError


class DataAnomaliesError(PipelineError):
    """The examples break the curated schema; the message lists every anomaly."""


def schema_constraint(schema: schema_pb2.Schema, feature_name: str) -> str:
    """The curated schema's constraints on one feature, in words (TFDV's text omits the bounds)."""
    for feature in schema.feature:
        if feature.name != feature_name:
            continue
        parts = [schema_pb2.FeatureType.Name(feature.type).lower()]
        if feature.HasField("int_domain"):
            parts.append(f"values in {feature.int_domain.min}..{feature.int_domain.max}")
        if feature.HasField("shape"):
            parts.append(f"shape {[d.size for d in feature.shape.dim]}")
        if feature.presence.min_fraction == 1.0:
            parts.append("present in every example")
        return ", ".join(parts)
    return "not in the schema"


def describe_anomalies(
    split: str, anomalies: anomalies_pb2.Anomalies, schema: schema_pb2.Schema | None = None
) -> list[str]:
    """One line per anomalous feature (and for data-set level anomalies) of one split.

    With the schema, each line also states the constraint the feature broke.
    """
    lines = []
    for name, info in sorted(anomalies.anomaly_info.items()):
        line = f"split '{split}', feature '{name}': {info.short_description} ({info.description})"
        if schema is not None:
            line += f"; the schema expects {schema_constraint(schema, name)}"
        lines.append(line)
    if anomalies.data_missing:  # TFDV's verdict on a split without a single example
        lines.append(f"split '{split}', data set: no examples (TFDV reports the data missing)")
    if anomalies.HasField("dataset_anomaly_info"):
        info = anomalies.dataset_anomaly_info
        lines.append(f"split '{split}', data set: {info.short_description} ({info.description})")
    return lines


def read_anomalies(artifact: types.Artifact) -> dict[str, anomalies_pb2.Anomalies]:
    """The Anomalies proto ExampleValidator wrote for each split of its output artifact."""
    result = {}
    for split in artifact_utils.decode_split_names(artifact.split_names):
        path = os.path.join(artifact_utils.get_split_uri([artifact], split), DEFAULT_FILE_NAME)
        result[split] = anomalies_pb2.Anomalies.FromString(io_utils.read_bytes_file(path))
    return result


@component
def AnomalyGate(
    examples: InputArtifact[standard_artifacts.Examples],
    anomalies: InputArtifact[standard_artifacts.ExampleAnomalies],
    schema: InputArtifact[standard_artifacts.Schema],
    gold_anomalies: InputArtifact[standard_artifacts.ExampleAnomalies] = None,
    ledger: Parameter[str] = "",
) -> None:
    """Raise `DataAnomaliesError` listing every anomaly of the new span (`examples`) and the gold test set.

    A span with anomalies of its own is recorded as refused in `ledger` first.
    """
    curated = io_utils.SchemaReader().read(io_utils.get_only_uri_in_dir(schema.uri))

    def problems_of(artifact) -> list[str]:
        if artifact is None:
            return []
        found = read_anomalies(artifact).items()
        return [line for split, result in found for line in describe_anomalies(split, result, curated)]

    span_problems, gold_problems = problems_of(anomalies), problems_of(gold_anomalies)
    if not span_problems and not gold_problems:
        return
    span = examples.get_int_custom_property("span")
    message = (
        f"span {span} or the gold test set breaks the curated schema; stopped before Transform and "
        "Trainer:\n  " + "\n  ".join(span_problems + [f"gold test set: {p}" for p in gold_problems])
    )
    if span_problems:
        record_refusal(ledger, examples, "schema", message)
    raise DataAnomaliesError(message)
