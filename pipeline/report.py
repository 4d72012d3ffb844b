"""The run report: what a run did, read back from MLMD and TFMA's outputs.

Per component: state (COMPLETE, CACHED, FAILED) and wall time; the model's test
accuracy overall and per class, its confusion matrix, blessed or not and why;
the accuracy estimator the Trainer fitted into the model (what it was fitted
on and what it learnt); the serving check; the pushed path and version; the
run's wall time and peak memory. `fmnist run` prints it and saves it as JSON (with the confusion matrix
as PNG) under `<pipeline_root>/reports/`; `fmnist report` prints the saved one
again, identically.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ml_metadata.proto import metadata_store_pb2
from tfx.utils import path_utils

from components.drift_gate import describe_drift, split_pair_anomalies
from components.gold_comparison import GoldComparison, SliceFigures
from components.span_planner import DESCRIPTION_PROPERTY, SPAN_PROPERTY
from components.training_window import WINDOW_SPANS_PROPERTY
from core import storage
from core.accuracy_estimate import estimator_path, load_estimator
from core.config import PipelineConfig
from core.errors import InputError
from core.vocabulary import CLASS_NAMES
from core.warm_start import read_warm_start
from pipeline import nodes
from pipeline.evaluation import (
    accuracy_by_slice,
    blessing_failures,
    calibration_buckets,
    confusion_matrix,
    gold_comparison,
    most_confused_pairs,
)
from pipeline.metadata import Metadata, properties, served_model_text, store_exists
from pipeline.plots import save_confusion_matrix, save_reliability_diagram
from release.rollout import read_rollout

REPORTS_DIR = "reports"
DRIFT_COMPARISONS = {
    nodes.DRIFT_VS_PREVIOUS_SPAN: "the previous span",
    nodes.DRIFT_VS_WINDOW: "the training window",
}


@dataclass(frozen=True)
class ComponentRun:
    component: str
    state: str  # MLMD's execution states: COMPLETE, CACHED, FAILED, CANCELED, RUNNING
    seconds: float


@dataclass(frozen=True)
class ModelFacts:
    """What the run learned about its model; None where the run did not get that far."""

    accuracy: float | None = None
    examples: int = 0
    per_class: dict[str, float] = field(default_factory=dict)  # accuracy within each true class (recall)
    # TFMA's binarized metrics, class name -> {"precision", "recall", "binary_accuracy"}
    per_class_binary: dict[str, dict[str, float]] = field(default_factory=dict)
    expected_calibration_error: float | None = None
    # reliability diagram of the top label: [low, high, examples, accuracy, mean confidence] per bucket
    calibration: list[list[float]] = field(default_factory=list)
    confusion_matrix: list[list[int]] = field(default_factory=list)
    most_confused: list[dict[str, Any]] = field(default_factory=list)
    # both models on the gold set with intervals, the paired change and its gate (GoldComparison as JSON)
    gold_comparison: dict[str, Any] | None = None
    evaluation_uri: str | None = None
    blessed: bool | None = None
    not_blessed_because: list[str] = field(default_factory=list)
    serving_check_passed: bool | None = None
    serving_check_problems: str | None = None
    pushed: bool | None = None
    pushed_path: str | None = None
    pushed_version: str | None = None
    warm_started_from: str | None = None  # the served model whose weights the Trainer started from
    not_warm_started_because: str | None = None  # the Trainer was offered one, but trained from scratch
    baseline_model: str | None = None  # the served model the Evaluator measured it against
    accuracy_estimator: dict[str, Any] | None = None  # the fit's summary (`estimator_facts`)


@dataclass(frozen=True)
class RunReport:
    run_id: str | None
    components: list[ComponentRun] = field(default_factory=list)
    model: ModelFacts = field(default_factory=ModelFacts)
    wall_seconds: float | None = None
    peak_rss_mb: dict[str, float] | None = None
    rerun_after_killed: list[str] = field(default_factory=list)
    error: str | None = None
    confusion_matrix_png: str | None = None
    calibration_png: str | None = None
    span: int | None = None
    span_plan: str | None = None
    training_window: list[int] = field(default_factory=list)  # the spans the model trained on
    drift: list[str] = field(default_factory=list)  # what the drift gate found (it stopped or warned)
    rollout: str | None = None  # the labels after the run
    retention: str | None = None  # what the clean-up after the run removed

    def states(self) -> dict[str, str]:
        """Component -> state, for checks like "everything was cached"."""
        return {row.component: row.state for row in self.components}

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunReport:
        components = [ComponentRun(**row) for row in data.get("components", [])]
        model = ModelFacts(**data.get("model", {}))
        return cls(**{**data, "components": components, "model": model})


def estimator_facts(model_dir: str) -> dict[str, Any] | None:
    """What the accuracy estimator exported with the model was fitted on and learnt; None without one.

    An unreadable file is reported as a problem, not raised: the rest of the
    run report still holds.
    """
    path = estimator_path(model_dir)
    if not storage.exists(path):
        return None
    try:
        fitted = load_estimator(path)
    except InputError as err:
        return {"path": path, "problem": str(err)}
    return {
        "path": path,
        "method": fitted.method,
        "held_out_images": fitted.held_out_examples,
        "held_out_accuracy": fitted.held_out_accuracy,
        "class_mix_tolerance": fitted.class_mix_tolerance,
        "margins": {
            "low": fitted.margin_low,
            "high": fitted.margin_high,
            "class_low": fitted.class_margin_low,
            "class_high": fitted.class_margin_high,
        },
        "fit_shifts": len(fitted.fit_shifts),
    }


def _model_facts(facts: dict[str, Any], artifact: metadata_store_pb2.Artifact, node: str) -> None:
    """Add what one output artifact of the run says about the model."""
    props = properties(artifact)
    if node in DRIFT_COMPARISONS and artifact.type == "ExampleAnomalies":
        against = DRIFT_COMPARISONS[node]
        for anomalies in split_pair_anomalies(artifact.uri, props.get("split_names", "[]")).values():
            facts.setdefault("drift", []).extend(describe_drift(against, anomalies))
    elif artifact.type == "ModelEvaluation":
        matrix = confusion_matrix(artifact.uri)
        facts.update(accuracy_by_slice(artifact.uri), evaluation_uri=artifact.uri)
        facts["calibration"] = calibration_buckets(artifact.uri)
        comparison = gold_comparison(artifact.uri)
        facts["gold_comparison"] = dataclasses.asdict(comparison) if comparison else None
        facts.update(confusion_matrix=matrix.tolist(), most_confused=most_confused_pairs(matrix))
    elif node == nodes.TRAINER and artifact.type == "Model":
        facts["accuracy_estimator"] = estimator_facts(path_utils.serving_model_path(artifact.uri))
    elif artifact.type == "ModelRun":
        warm_start = read_warm_start(artifact.uri)
        if warm_start is None:  # the Trainer was offered nothing that serves
            facts["trained_from_scratch"] = True
        elif not warm_start.restored:
            facts["not_warm_started_because"] = warm_start.why_not
    elif node == nodes.TRAINING_WINDOW:
        facts["training_window"] = json.loads(props.get(WINDOW_SPANS_PROPERTY) or "[]")
    elif node == nodes.SPAN_PLANNER:
        facts["span"] = props.get(SPAN_PROPERTY)
        facts["span_plan"] = props.get(DESCRIPTION_PROPERTY)
    elif artifact.type == "ModelBlessing":
        facts["blessed"] = props.get("blessed") == 1
    elif artifact.type == "InfraBlessing":
        facts["serving_check_passed"] = props.get("blessed") == 1
        facts["serving_check_problems"] = props.get("problems") or None
    elif artifact.type == "PushedModel":
        facts["pushed"] = props.get("pushed") == 1
        facts["pushed_path"] = props.get("pushed_destination")
        facts["pushed_version"] = props.get("pushed_version")


def collect_run_report(config: PipelineConfig) -> RunReport:
    """Everything MLMD and TFMA know about the newest run of `config`'s pipeline."""
    if not store_exists(config):  # the run failed before TFX created its store
        return RunReport(run_id=None)
    metadata = Metadata.open(config)
    run = metadata.latest_run()
    if run is None:
        return RunReport(run_id=None)
    components, facts = [], {}
    for execution in metadata.executions(run.id):
        state = metadata_store_pb2.Execution.State.Name(execution.last_known_state)
        seconds = (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000
        node = metadata.node_of(execution.id)
        components.append(ComponentRun(node, state, round(seconds, 2)))
        for artifact in metadata.outputs(execution.id):
            _model_facts(facts, artifact, node)
        for key, fact in (("base_model", "warm_started_from"), ("baseline_model", "baseline_model")):
            served = served_model_text(metadata.one(execution.id, key))
            if served is not None:
                facts[fact] = served
    if facts.get("not_warm_started_because") or facts.get("trained_from_scratch"):
        facts.pop("warm_started_from", None)  # offered the served model, but trained from scratch
    facts.pop("trained_from_scratch", None)
    if facts.get("blessed") is False and facts.get("evaluation_uri"):
        facts["not_blessed_because"] = blessing_failures(facts["evaluation_uri"])
    drift, span, plan = facts.pop("drift", []), facts.pop("span", None), facts.pop("span_plan", None)
    window = facts.pop("training_window", [])
    rollout = read_rollout(config.serving_dir, config.model_name)
    return RunReport(
        run_id=run.name,
        components=components,
        model=ModelFacts(**facts),
        drift=drift,
        span=span,
        span_plan=plan,
        training_window=window,
        rollout=rollout.describe() if rollout.stable is not None else None,
    )


def peak_rss_mb() -> dict[str, float]:
    """Peak resident memory of this process and of its largest child (Beam workers), in MB."""
    usage_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    usage_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"main_process": round(usage_self / 1024, 1), "largest_child": round(usage_children / 1024, 1)}


def format_report(report: RunReport) -> str:
    """A short, human-readable table of the report."""
    lines = [f"Run {report.run_id}"]
    if report.span_plan:
        lines.append(f"data: {report.span_plan}")
    if report.training_window:
        lines.append(f"training window: spans {report.training_window}")
    lines.append(f"{'component':<32}{'state':<10}{'seconds':>9}")
    for row in report.components:
        lines.append(f"{row.component:<32}{row.state:<10}{row.seconds:>9.1f}")
    total = sum(row.seconds for row in report.components)
    lines.append(f"{'total (sum of components)':<42}{total:>9.1f}")
    if report.wall_seconds is not None:
        lines.append(f"{'wall time (the whole run)':<42}{report.wall_seconds:>9.1f}")
    if report.rerun_after_killed:
        lines.append(f"redone after a killed run: {', '.join(report.rerun_after_killed)}")
    drift = [line for line in report.drift if line not in (report.error or "")]  # not twice
    if drift:
        lines.append("drift of the new span:")
        lines.extend(f"  {line}" for line in drift)
    model = report.model
    if model.warm_started_from:
        lines.append(f"warm-started from the served model {model.warm_started_from}")
    if model.not_warm_started_because:
        lines.append(f"trained from scratch, not warm-started: {model.not_warm_started_because}")
    if model.accuracy is not None:
        against = f"; measured against {model.baseline_model}" if model.baseline_model else ""
        lines.append(f"test accuracy: {model.accuracy:.4f} on {model.examples} gold examples{against}")
        lines.append(f"  {'class':<14}{'accuracy':>9}{'precision':>11}{'recall':>8}{'1-vs-rest':>11}")
        for name in (n for n in CLASS_NAMES if n in model.per_class):
            binary = model.per_class_binary.get(name, {})
            cells = "".join(
                f"{binary[k]:>{w}.4f}" if k in binary else f"{'-':>{w}}"
                for k, w in (("precision", 11), ("recall", 8), ("binary_accuracy", 11))
            )
            lines.append(f"  {name:<14}{model.per_class[name]:>9.4f}{cells}")
    if model.gold_comparison:
        lines.extend(gold_interval_lines(GoldComparison.from_dict(model.gold_comparison)))
    lines.extend(_estimator_lines(model.accuracy_estimator))
    if model.expected_calibration_error is not None:
        lines.append(
            f"calibration: expected calibration error {model.expected_calibration_error:.4f} "
            "(top label, 10 confidence buckets)"
        )
    if model.most_confused:
        pairs = ", ".join(
            f"{c['true']} as {c['predicted']} ({c['examples']})" for c in model.most_confused[:3]
        )
        lines.append(f"most confused: {pairs}")
    if report.confusion_matrix_png:
        lines.append(f"confusion matrix: {report.confusion_matrix_png}")
    if report.calibration_png:
        lines.append(f"reliability diagram: {report.calibration_png}")
    if model.blessed is not None:
        lines.append(f"blessed: {'yes' if model.blessed else 'no'}")
        lines.extend(f"  {reason}" for reason in model.not_blessed_because)
    if model.serving_check_passed is not None:
        lines.append(f"serving check (gRPC): {'passed' if model.serving_check_passed else 'FAILED'}")
        if not model.serving_check_passed:
            lines.append(f"  {model.serving_check_problems or ''}")
    if model.pushed:
        lines.append(f"pushed: version {model.pushed_version} at {model.pushed_path}")
    elif model.pushed is not None:
        lines.append("pushed: no")
    if report.rollout:
        lines.append(f"rollout: {report.rollout}")
    if report.retention:
        lines.append(report.retention)
    if report.peak_rss_mb:
        rss = report.peak_rss_mb
        lines.append(
            f"peak RSS: {rss['main_process']:.0f} MB main process, "
            f"{rss['largest_child']:.0f} MB largest child process"
        )
    if report.error:
        lines.append(f"error: {report.error}")
    return "\n".join(lines)


def _estimator_lines(facts: dict[str, Any] | None) -> list[str]:
    """The accuracy estimator's fit in two lines (none when the model has no estimator)."""
    if facts is None:
        return []
    if "problem" in facts:
        return [f"accuracy estimator: unreadable: {facts['problem']}"]
    m = facts["margins"]
    return [
        f"accuracy estimator ({facts['method']}): fitted on {facts['held_out_images']:,} held-out eval "
        f"images, {facts['held_out_accuracy']:.4f} right there; a batch reads as a change of class mix "
        f"within {facts['class_mix_tolerance']:.2f} chance residuals",
        f"  interval margins from {facts['fit_shifts']} synthetic shifts (widening per point of departure): "
        f"overall {m['low']:.2f} down, {m['high']:.2f} up; per class {m['class_low']:.2f} "
        f"down, {m['class_high']:.2f} up",
    ]


def gold_interval_lines(comparison: GoldComparison) -> list[str]:
    """Each model's gold accuracy with its interval, overall and per class; the paired change and its gate."""
    level, overall = f"{comparison.level:.0%}", comparison.overall
    if overall.served is None:
        return [
            f"gold accuracy with {level} intervals (Wilson); nothing served yet, no change to judge",
            f"  {'class':<14}candidate",
            *(f"  {name:<14}{figures.candidate.text()}" for name, figures in _slices(comparison)),
        ]
    class_drop = next((f.max_drop for f in comparison.per_class.values()), None)
    lines = [
        f"gold accuracy with {level} intervals (Wilson); change: candidate minus served model, paired on "
        "the same images (Newcombe);",
        f"  a change is refused when its whole interval lies below -max drop (overall "
        f"{_allowance(overall.max_drop)}, per class {_allowance(class_drop)})",
        f"  {'class':<14}{'candidate':<25}{'served model':<25}{'change':<28}gate",
    ]
    for name, figures in _slices(comparison):
        verdict = "REFUSED" if figures.refused else "passes"
        lines.append(
            f"  {name:<14}{figures.candidate.text():<25}{figures.served.text():<25}"
            f"{figures.change.text('+'):<28}{verdict}"
        )
    return lines


def _allowance(max_drop: float | None) -> str:
    return "not gated" if max_drop is None else f"{max_drop:g}"


def _slices(comparison: GoldComparison) -> list[tuple[str, SliceFigures]]:
    return [("overall", comparison.overall), *comparison.per_class.items()]


def report_path(config: PipelineConfig, run_id: str | None) -> str:
    name = (run_id or "run").replace(":", "-").replace("/", "_")
    return os.path.join(config.pipeline_root, REPORTS_DIR, f"{name}.json")


def save_report(report: RunReport, config: PipelineConfig) -> tuple[RunReport, str]:
    """Write the report as JSON, and its confusion matrix as PNG, under `<pipeline_root>/reports/`.

    Returns the report as saved (with the picture's path) and the JSON's path;
    the report passed in is not changed.
    """
    path = report_path(config, report.run_id)
    storage.make_dirs(os.path.dirname(path))
    if report.model.confusion_matrix:
        picture = save_confusion_matrix(
            np.array(report.model.confusion_matrix),
            path.removesuffix(".json") + "-confusion.png",
            f"Test set, accuracy {report.model.accuracy or 0:.4f} (run {report.run_id})",
        )
        report = dataclasses.replace(report, confusion_matrix_png=picture)
    if report.model.calibration:
        picture = save_reliability_diagram(
            report.model.calibration,
            path.removesuffix(".json") + "-calibration.png",
            f"Top-label calibration, ECE {report.model.expected_calibration_error or 0:.4f} "
            f"(run {report.run_id})",
        )
        report = dataclasses.replace(report, calibration_png=picture)
    storage.write_text(path, json.dumps(report.to_json(), indent=2))
    return report, path


def latest_report(config: PipelineConfig) -> RunReport:
    """The newest run's report as `fmnist run` saved it; collected from MLMD if it was never saved."""
    if store_exists(config):
        run = Metadata.open(config).latest_run()
        if run is not None and storage.exists(report_path(config, run.name)):
            return RunReport.from_json(json.loads(storage.read_text(report_path(config, run.name))))
    return collect_run_report(config)
