"""A model card for a pushed version: what a reviewer reads before promoting it (`fmnist model-card`).

Everything comes from what the pipeline recorded, read the way the run report
reads it: the lineage in ML Metadata (spans and their image counts, warm
start, hyperparameters, the gates; `pipeline/lineage.py`), the Evaluator's
output on the gold test set (`pipeline/evaluation.py`: the confusion matrix,
TFMA's top-label calibration, the paired change against the served model),
the SavedModel's signatures, and the rollout history (`release/history.py`).
Per-class accuracy comes with Wilson 90 % intervals from the confusion
matrix (`components/gold_comparison.wilson`), so a class of 30 gold images is
not read as surely as one of 1,000. `pipeline/model_card_page.py` writes it
as HTML and Markdown.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from tensorflow.core.framework import types_pb2

from components.gold_comparison import wilson
from core import storage
from core.config import PipelineConfig
from core.vocabulary import CLASS_NAMES
from pipeline.evaluation import (
    accuracy_by_slice,
    calibration_buckets,
    confusion_matrix,
    gold_comparison,
    most_confused_pairs,
)
from pipeline.lineage import LineageChain, lineage_of
from pipeline.metadata import Metadata
from pipeline.report import report_path
from release.rollout import read_rollout
from serving.version_files import read_saved_model

WEAKEST = 3  # classes named as the weakest (those below the overall accuracy)
CONFUSED = 3  # most confused pairs named
INIT_OP = "__saved_model_init_op"  # TensorFlow's internal signature, not a serving contract


@dataclasses.dataclass(frozen=True)
class Accuracy:
    """Gold accuracy of a slice (all images, or one true class) with its Wilson 90 % interval."""

    name: str
    right: int
    examples: int
    value: float
    low: float
    high: float


@dataclasses.dataclass(frozen=True)
class ModelCard:
    model: str
    version: int
    pushed_destination: str
    role: str  # stable, canary, way back, or not served
    run: str | None
    run_report: str | None  # the saved run report of the run that pushed it, when `fmnist run` saved one
    spans: list[dict[str, Any]]  # span, images, source
    warm_started_from: str | None
    hyperparameters: dict[str, Any]
    overall: Accuracy | None
    per_class: list[Accuracy]
    calibration_error: float | None
    calibration_source: str
    gates: list[str]
    weakest: list[Accuracy]
    confused: list[dict[str, Any]]
    signatures: list[dict[str, Any]]
    history: list[dict[str, Any]]
    history_file: str | None
    missing: list[str]  # what could not be read (an evaluation removed by retention)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def accuracies(matrix: np.ndarray) -> tuple[Accuracy, list[Accuracy]]:
    """Overall and per true class accuracy with Wilson intervals, from a confusion matrix (rows: truth)."""

    def figure(name: str, right: int, n: int) -> Accuracy:
        interval = wilson(right, n)
        return Accuracy(name, right, n, interval.value, interval.low, interval.high)

    per_class = [
        figure(name, int(matrix[k, k]), int(matrix[k].sum()))
        for k, name in enumerate(CLASS_NAMES)
        if matrix[k].sum()
    ]
    return figure("overall", int(np.trace(matrix)), int(matrix.sum())), per_class


def weakest(overall: Accuracy | None, per_class: list[Accuracy]) -> list[Accuracy]:
    """The (at most `WEAKEST`) least accurate classes, among those below the overall accuracy."""
    below = [a for a in per_class if overall is not None and a.value < overall.value]
    return sorted(below, key=lambda a: a.value)[:WEAKEST]


def calibration_error(buckets: list[list[float]]) -> float | None:
    """Expected calibration error from reliability buckets [low, high, examples, accuracy, confidence]."""
    rows = np.array(buckets, dtype=float).reshape(-1, 5)
    total = rows[:, 2].sum()
    return float(np.sum(rows[:, 2] * np.abs(rows[:, 3] - rows[:, 4])) / total) if total else None


def signatures(export_dir: str) -> list[dict[str, Any]]:
    """Each serving signature: its method, inputs and outputs as name, dtype and shape (? for any size)."""

    def tensors(mapping) -> list[dict[str, str]]:
        return [
            {
                "name": name,
                "dtype": types_pb2.DataType.Name(info.dtype).removeprefix("DT_").lower(),
                "shape": "["
                + ", ".join("?" if d.size < 0 else str(d.size) for d in info.tensor_shape.dim)
                + "]",
            }
            for name, info in sorted(mapping.items())
        ]

    defs = read_saved_model(export_dir).meta_graphs[0].signature_def
    return [
        {"name": name, "method": d.method_name, "inputs": tensors(d.inputs), "outputs": tensors(d.outputs)}
        for name, d in sorted(defs.items())
        if name != INIT_OP
    ]


def _gates(chain: LineageChain, evaluation_uri: str | None) -> list[str]:
    spans = [s.span for s in chain.spans]
    gates = [
        f"data gates (schema, drift between spans, labels against the served model): passed by spans "
        f"{spans}; a span enters a training window only after passing them"
    ]
    evaluation = chain.evaluation
    if evaluation.node:
        accuracy = f"gold accuracy {evaluation.accuracy:.4f}" if evaluation.accuracy is not None else ""
        verdict = "blessed" if evaluation.blessed else "NOT blessed"
        gates.append(f"{evaluation.node}: {verdict} on the gold test set; {accuracy}".rstrip("; "))
    comparison = gold_comparison(evaluation_uri) if evaluation_uri else None
    change = comparison.overall.change if comparison else None
    if change is not None:
        allowed = comparison.overall.max_drop
        gates.append(
            f"paired change against the served model {evaluation.baseline_model_uri}: {change.text('+')} "
            f"(90 % interval; allowed drop {allowed if allowed is not None else 'not gated'})"
        )
    elif evaluation.node:
        gates.append("no served model to compare with: the change gates were skipped (the first push)")
    gates.append(f"serving check: {'passed' if chain.serving_check.blessed else 'not run or failed'}")
    return gates


def _run_facts(config: PipelineConfig, pusher_execution: int) -> tuple[str | None, str | None]:
    """The run that pushed the version, and its saved report's path if `fmnist run` saved one."""
    metadata = Metadata.open(config)
    execution = metadata.store.get_executions_by_id([pusher_execution])[0]
    run = metadata.run_of(execution)
    if run is None:
        return None, None
    path = report_path(config, run.name)
    return run.name, path if storage.exists(path) else None


def collect_model_card(config: PipelineConfig, version: int | None = None) -> ModelCard:
    """The card of pushed `version` (default: the stable one); LineageError (exit 2) for an unknown one."""
    chain = lineage_of(config, version)
    uri = chain.evaluation.evaluation_uri
    live = uri is not None and storage.exists(uri)
    missing = [] if live else [f"the Evaluator's output ({uri or 'none recorded'}): gold figures unknown"]
    matrix = confusion_matrix(uri) if live else np.zeros((0, 0))
    overall, per_class = accuracies(matrix) if matrix.sum() else (None, [])
    tfma_ece = accuracy_by_slice(uri).get("expected_calibration_error") if live else None
    ece = (
        tfma_ece if tfma_ece is not None else (calibration_error(calibration_buckets(uri)) if live else None)
    )
    roles = read_rollout(config.serving_dir, config.model_name).roles()
    run, report = _run_facts(config, chain.pusher_execution)
    return ModelCard(
        model=config.model_name,
        version=chain.version,
        pushed_destination=chain.pushed_destination,
        role=", ".join(role for role, v in roles.items() if v == chain.version) or "not served",
        run=run,
        run_report=report,
        spans=[{"span": s.span, "images": s.examples, "source": s.source} for s in chain.spans],
        warm_started_from=chain.warm_started_from,
        hyperparameters=chain.hyperparameters,
        overall=overall,
        per_class=per_class,
        calibration_error=ece,
        calibration_source="TFMA's top-label metric" if tfma_ece is not None else "the gold answers' buckets",
        gates=_gates(chain, uri if live else None),
        weakest=weakest(overall, per_class),
        confused=most_confused_pairs(matrix, CONFUSED) if matrix.sum() else [],
        signatures=signatures(chain.pushed_destination),
        history=chain.rollout_history,
        history_file=chain.history_file,
        missing=missing,
    )
