"""The run report: what a run did, read back from MLMD and TFMA's outputs.

Per component: state (COMPLETE, CACHED, FAILED) and wall time; the model's test
accuracy overall and per class, blessed or not and why; the pushed path and
version. Printed on the terminal and saved as JSON beside the artifacts.
"""

from __future__ import annotations

import json
import os
import resource
from typing import Any

import ml_metadata as mlmd
import numpy as np
import tensorflow_model_analysis as tfma
from ml_metadata.proto import metadata_store_pb2

from components.features import CLASS_NAMES, LABEL_KEY, NUM_CLASSES
from pipeline.config import PipelineConfig
from pipeline.plots import save_confusion_matrix

ACCURACY_METRIC = "sparse_categorical_accuracy"
EXAMPLE_COUNT_METRIC = "example_count"
# TFMA names the models "candidate" and "baseline" when there is a baseline, "" otherwise.
CANDIDATE_MODEL_NAMES = ("", "candidate")


def open_store(config: PipelineConfig, read_only: bool = True) -> mlmd.MetadataStore:
    connection = metadata_store_pb2.ConnectionConfig()
    connection.sqlite.filename_uri = config.metadata_path
    connection.sqlite.connection_mode = (
        metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
        if read_only
        else metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE
    )
    return mlmd.MetadataStore(connection)


def latest_run_context(store: mlmd.MetadataStore, pipeline_name: str) -> metadata_store_pb2.Context | None:
    """The newest `pipeline_run` context of this pipeline (TFX makes the pipeline context its parent)."""
    runs = [
        run
        for run in store.get_contexts_by_type("pipeline_run")
        if any(p.name == pipeline_name for p in store.get_parent_contexts_by_context(run.id))
    ]
    return max(runs, key=lambda c: c.create_time_since_epoch, default=None)


def node_id(store: mlmd.MetadataStore, execution_id: int) -> str:
    """The pipeline node (component id) an execution belongs to."""
    for context in store.get_contexts_by_execution(execution_id):
        if context.type == "node":
            return context.name.split(".", 1)[-1]
    return f"execution {execution_id}"


def _outputs(store: mlmd.MetadataStore, execution_id: int) -> list[metadata_store_pb2.Artifact]:
    events = store.get_events_by_execution_ids([execution_id])
    ids = [
        e.artifact_id
        for e in events
        if e.type in (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)
    ]
    return store.get_artifacts_by_id(ids) if ids else []


def _custom(artifact: metadata_store_pb2.Artifact, key: str) -> Any:
    value = artifact.custom_properties.get(key)
    if value is None:
        return None
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def accuracy_by_slice(evaluation_uri: str) -> dict[str, Any]:
    """Overall accuracy and example count, and accuracy per class, from TFMA's metrics."""
    result: dict[str, Any] = {"per_class": {}}
    for slice_metrics in tfma.load_metrics(evaluation_uri):
        values = {
            kv.key.name: kv.value.double_value.value
            for kv in slice_metrics.metric_keys_and_values
            if kv.key.model_name in CANDIDATE_MODEL_NAMES and not kv.key.is_diff
        }
        keys = slice_metrics.slice_key.single_slice_keys
        if not keys:
            result["accuracy"] = values.get(ACCURACY_METRIC)
            result["examples"] = int(values.get(EXAMPLE_COUNT_METRIC, 0))
        elif keys[0].column == LABEL_KEY:
            label = int(keys[0].int64_value)
            result["per_class"][CLASS_NAMES[label]] = values.get(ACCURACY_METRIC)
    return result


def confusion_matrix(evaluation_uri: str) -> np.ndarray:
    """The overall slice's confusion matrix (rows true class, columns predicted) from TFMA's plot."""
    matrix = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    for plots in tfma.load_plots(evaluation_uri):
        if plots.slice_key.single_slice_keys:
            continue
        for key_and_value in plots.plot_keys_and_values:
            if key_and_value.key.model_name not in CANDIDATE_MODEL_NAMES:
                continue
            for table in key_and_value.value.multi_class_confusion_matrix_at_thresholds.matrices:
                for entry in table.entries:
                    matrix[entry.actual_class_id, entry.predicted_class_id] += round(
                        entry.num_weighted_examples
                    )
    return matrix


def most_confused_pairs(matrix: np.ndarray, count: int = 5) -> list[dict[str, Any]]:
    """The largest off-diagonal cells: which true class is most often taken for which."""
    off_diagonal = [
        (int(matrix[t, p]), t, p)
        for t in range(len(matrix))
        for p in range(len(matrix))
        if t != p and matrix[t, p]
    ]
    return [
        {"true": CLASS_NAMES[t], "predicted": CLASS_NAMES[p], "examples": n}
        for n, t, p in sorted(off_diagonal, key=lambda c: (-c[0], c[1], c[2]))[:count]
    ]


def threshold_text(threshold: tfma.MetricThreshold) -> str:
    """A TFMA threshold in words: "must be >= 0.9" or "change vs baseline must be >= -0.005"."""
    if threshold.HasField("change_threshold"):
        change = threshold.change_threshold
        bound = change.absolute.value if change.HasField("absolute") else change.relative.value
        kind = "absolute" if change.HasField("absolute") else "relative"
        return f"{kind} change vs baseline must be >= {bound:g}"
    bounds = threshold.value_threshold
    parts = []
    if bounds.HasField("lower_bound"):
        parts.append(f">= {bounds.lower_bound.value:g}")
    if bounds.HasField("upper_bound"):
        parts.append(f"<= {bounds.upper_bound.value:g}")
    return "must be " + " and ".join(parts)


def validation_failures(evaluation_uri: str) -> list[str]:
    """Why TFMA refused to bless: one line per failed threshold (metric, value, bound)."""
    validation = tfma.load_validation_result(evaluation_uri)
    lines = []
    for per_slice in validation.metric_validations_per_slice:
        for failure in per_slice.failures:
            name = failure.metric_key.name + (" change" if failure.metric_key.is_diff else "")
            lines.append(
                f"{name} = {failure.metric_value.double_value.value:.4f}, "
                f"{threshold_text(failure.metric_threshold)}"
            )
    return lines


def collect_run_report(config: PipelineConfig) -> dict[str, Any]:
    """Everything worth knowing about the newest run of `config`'s pipeline."""
    report: dict[str, Any] = {"run_id": None, "components": [], "model": {}}
    if not os.path.exists(config.metadata_path):  # the run failed before TFX created its store
        return report
    store = open_store(config)
    run = latest_run_context(store, config.pipeline_name)
    if run is None:
        return report
    report["run_id"] = run.name
    for execution in sorted(store.get_executions_by_context(run.id), key=lambda e: e.create_time_since_epoch):
        node = node_id(store, execution.id)
        state = metadata_store_pb2.Execution.State.Name(execution.last_known_state)
        seconds = (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000
        report["components"].append({"component": node, "state": state, "seconds": round(seconds, 2)})
        for artifact in _outputs(store, execution.id):
            _add_model_facts(report["model"], artifact)
    return report


def peak_rss_mb() -> dict[str, float]:
    """Peak resident memory of this process and of its largest child (Beam workers), in MB."""
    usage_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    usage_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"main_process": round(usage_self / 1024, 1), "largest_child": round(usage_children / 1024, 1)}


def _add_model_facts(model: dict[str, Any], artifact: metadata_store_pb2.Artifact) -> None:
    if artifact.type == "ModelEvaluation":
        model.update(accuracy_by_slice(artifact.uri))
        model["evaluation_uri"] = artifact.uri
        matrix = confusion_matrix(artifact.uri)
        model["confusion_matrix"] = matrix.tolist()
        model["most_confused"] = most_confused_pairs(matrix)
    elif artifact.type == "ModelBlessing":
        model["blessed"] = _custom(artifact, "blessed") == 1
    elif artifact.type == "InfraBlessing":
        model["serving_check_passed"] = _custom(artifact, "blessed") == 1
        if _custom(artifact, "problems"):
            model["serving_check_problems"] = _custom(artifact, "problems")
    elif artifact.type == "PushedModel":
        model["pushed"] = _custom(artifact, "pushed") == 1
        model["pushed_path"] = _custom(artifact, "pushed_destination")
        model["pushed_version"] = _custom(artifact, "pushed_version")


def finish_report(report: dict[str, Any]) -> dict[str, Any]:
    """Add the reasons for a refused blessing, once the evaluation is known."""
    model = report["model"]
    if model.get("blessed") is False and model.get("evaluation_uri"):
        model["not_blessed_because"] = validation_failures(model["evaluation_uri"])
    return report


def format_report(report: dict[str, Any]) -> str:
    """A short, human-readable table of the report."""
    lines = [f"Run {report['run_id']}", f"{'component':<26}{'state':<10}{'seconds':>9}"]
    for row in report["components"]:
        lines.append(f"{row['component']:<26}{row['state']:<10}{row['seconds']:>9.1f}")
    total = sum(row["seconds"] for row in report["components"])
    lines.append(f"{'total (sum)':<36}{total:>9.1f}")
    model = report["model"]
    if model.get("accuracy") is not None:
        lines.append(f"test accuracy: {model['accuracy']:.4f} on {model.get('examples', 0)} examples")
        per_class = model.get("per_class", {})
        for name in (n for n in CLASS_NAMES if n in per_class):
            lines.append(f"  {name:<14}{per_class[name]:.4f}")
    if model.get("most_confused"):
        pairs = ", ".join(
            f"{c['true']} as {c['predicted']} ({c['examples']})" for c in model["most_confused"][:3]
        )
        lines.append(f"most confused: {pairs}")
    if model.get("confusion_matrix_png"):
        lines.append(f"confusion matrix: {model['confusion_matrix_png']}")
    if "blessed" in model:
        lines.append(f"blessed: {'yes' if model['blessed'] else 'no'}")
        for reason in model.get("not_blessed_because", []):
            lines.append(f"  {reason}")
    if "serving_check_passed" in model:
        passed = model["serving_check_passed"]
        lines.append(f"serving check (gRPC): {'passed' if passed else 'FAILED'}")
        if not passed:
            lines.append(f"  {model.get('serving_check_problems', '')}")
    if model.get("pushed"):
        lines.append(f"pushed: version {model['pushed_version']} at {model['pushed_path']}")
    elif "pushed" in model:
        lines.append("pushed: no")
    if "peak_rss_mb" in report:
        rss = report["peak_rss_mb"]
        lines.append(
            f"peak RSS: {rss['main_process']:.0f} MB main process, "
            f"{rss['largest_child']:.0f} MB largest child process"
        )
    return "\n".join(lines)


def save_report(report: dict[str, Any], config: PipelineConfig) -> str:
    """Write the report as JSON (and the confusion matrix as PNG) under `<pipeline_root>/reports/`."""
    directory = os.path.join(config.pipeline_root, "reports")
    os.makedirs(directory, exist_ok=True)
    name = (report["run_id"] or "run").replace(":", "-").replace("/", "_")
    path = os.path.join(directory, f"{name}.json")
    if report["model"].get("confusion_matrix"):
        report["model"]["confusion_matrix_png"] = save_confusion_matrix(
            np.array(report["model"]["confusion_matrix"]),
            os.path.join(directory, f"{name}-confusion.png"),
            f"Test set, accuracy {report['model'].get('accuracy', 0):.4f} (run {report['run_id']})",
        )
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    return path
