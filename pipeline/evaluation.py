"""Evaluation: the TFMA configuration the Evaluator gates with, and readers of what the Evaluator wrote.

The wiring (`pipeline/definition.py`) takes the `EvalConfig` from here; the
run report, lineage and the benchmarks read metrics, plots and validation
results through the readers here, so metric names and TFMA's result layout
are known in one place; likewise the executor's own file beside TFMA's, both
models on the gold set with intervals and the paired change gates' verdicts
(`components/gold_comparison.py`). The custom TFMA metrics themselves (per-class
settings, top-label calibration) are module code in
`components/evaluation_metrics.py`, which TFMA loads by name.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np
import tensorflow_model_analysis as tfma

from components import evaluation_metrics
from components.evaluation_metrics import (
    EXPECTED_CALIBRATION_ERROR,
    PER_CLASS_METRICS,
    TOP_LABEL_CALIBRATION,
)
from components.gold_comparison import GOLD_COMPARISON_FILE, GoldComparison
from core import storage
from core.config import EvaluationConfig
from core.vocabulary import CLASS_NAMES, LABEL_KEY, NUM_CLASSES, SERVING_SIGNATURE

ACCURACY_METRIC = "sparse_categorical_accuracy"
EXAMPLE_COUNT_METRIC = "example_count"
# TFMA names the models "candidate" and "baseline" when there is a baseline, "" otherwise.
CANDIDATE_MODEL_NAMES = ("", "candidate")


def make_eval_config(config: EvaluationConfig) -> tfma.EvalConfig:
    """The gates against the served model, on the gold test set.

    Beside the gates it measures, for the candidate's report only: per class
    precision, recall and one-vs-rest accuracy (TFMA's binarized metrics), the
    confusion matrix, and the calibration of the top label
    (`components/evaluation_metrics.py`). Nothing else: TFMA's
    default metrics (those compiled into the Keras model) are off, because
    computing them reloads the Keras model in every metric combiner, which
    was a third of the Evaluator's time on a 2,000-image gold set (py-spy,
    docs/benchmarks.md), for figures no report reads.

    Overall accuracy: at least the floor (TFMA, on the point estimate), and at
    most `max_accuracy_drop` below the served model. Per class (a slice per
    label): at most `max_class_drop` below the served model, so a collapse of
    one class cannot hide inside an unchanged overall figure. The floor stays
    on the overall slice only: a threshold in a MetricsSpec applies to every
    slice it names, and the weakest class (Shirt) sits far below an
    overall-sized floor. The two change thresholds are stated here but judged
    by the Evaluator's executor (`components/evaluator.py`), which takes them
    out of TFMA's config: TFMA would compare point estimates, the executor
    refuses only a drop beyond the allowance with 95 % confidence, on the
    paired change and its interval (`components/gold_comparison.py`). Change
    thresholds are skipped while there is no served model yet (the first push).
    """
    overall, per_class = tfma.SlicingSpec(), tfma.SlicingSpec(feature_keys=[LABEL_KEY])

    def no_drop_below_baseline(drop: float) -> tfma.GenericChangeThreshold:
        return tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={"value": -drop}
        )

    thresholds = [
        tfma.PerSliceMetricThreshold(
            slicing_specs=[overall],
            threshold=tfma.MetricThreshold(
                value_threshold=tfma.GenericValueThreshold(lower_bound={"value": config.accuracy_floor}),
                change_threshold=no_drop_below_baseline(config.max_accuracy_drop),
            ),
        ),
        tfma.PerSliceMetricThreshold(
            slicing_specs=[per_class],
            threshold=tfma.MetricThreshold(change_threshold=no_drop_below_baseline(config.max_class_drop)),
        ),
    ]
    return tfma.EvalConfig(
        options=tfma.Options(include_default_metrics={"value": False}),
        model_specs=[tfma.ModelSpec(signature_name=SERVING_SIGNATURE, label_key=LABEL_KEY)],
        slicing_specs=[overall, per_class],
        metrics_specs=[
            # Both models: what the gates read (the served model's accuracy beside the candidate's).
            tfma.MetricsSpec(
                metrics=[
                    tfma.MetricConfig(class_name="ExampleCount"),
                    tfma.MetricConfig(
                        class_name="SparseCategoricalAccuracy", per_slice_thresholds=thresholds
                    ),
                ]
            ),
            # The candidate alone: what only its report reads. Per class as a one-vs-rest binary problem
            # (precision, recall, accuracy), the confusion matrix and the calibration. Ten one-vs-rest
            # confusion matrices per model and slice were a third of the Evaluator's time. TFMA names
            # the models "candidate" and "baseline" when there is a baseline, and turns this name into
            # "" when there is one model (update_eval_config_with_defaults, tensorflow_model_analysis/
            # utils/config_util.py).
            tfma.MetricsSpec(
                model_names=[tfma.CANDIDATE_KEY],
                metrics=[
                    tfma.MetricConfig(class_name="MultiClassConfusionMatrixPlot"),
                    tfma.MetricConfig(class_name="TopLabelCalibration", module=evaluation_metrics.__name__),
                ],
            ),
            tfma.MetricsSpec(
                model_names=[tfma.CANDIDATE_KEY],
                metrics=evaluation_metrics.per_class_metric_configs(),
                binarize=tfma.BinarizationOptions(class_ids={"values": list(range(NUM_CLASSES))}),
            ),
        ],
    )


def accuracy_by_slice(evaluation_uri: str) -> dict[str, Any]:
    """Overall accuracy, example count and calibration error, accuracy per class, and per class
    TFMA's binarized precision, recall and accuracy, from TFMA's metrics."""
    result: dict[str, Any] = {"per_class": {}, "per_class_binary": {}}
    binary_names = {metric.key for metric in PER_CLASS_METRICS.values()}
    for slice_metrics in tfma.load_metrics(evaluation_uri):
        candidate = [
            kv
            for kv in slice_metrics.metric_keys_and_values
            if kv.key.model_name in CANDIDATE_MODEL_NAMES and not kv.key.is_diff
        ]
        values = {
            kv.key.name: kv.value.double_value.value for kv in candidate if not kv.key.HasField("sub_key")
        }
        keys = slice_metrics.slice_key.single_slice_keys
        if not keys:
            result["accuracy"] = values.get(ACCURACY_METRIC)
            result["examples"] = int(values.get(EXAMPLE_COUNT_METRIC, 0))
            result["expected_calibration_error"] = values.get(EXPECTED_CALIBRATION_ERROR)
            for kv in candidate:
                if kv.key.name in binary_names and kv.key.sub_key.HasField("class_id"):
                    class_name = CLASS_NAMES[kv.key.sub_key.class_id.value]
                    per_class = result["per_class_binary"].setdefault(class_name, {})
                    value = kv.value.double_value.value
                    if math.isfinite(value):  # NaN: the precision of a class never answered
                        per_class[kv.key.name] = value
        elif keys[0].column == LABEL_KEY:
            label = int(keys[0].int64_value)
            result["per_class"][CLASS_NAMES[label]] = values.get(ACCURACY_METRIC)
    return result


def calibration_buckets(evaluation_uri: str) -> list[list[float]]:
    """The overall slice's top-label reliability buckets: [low, high, examples, accuracy, confidence]."""
    for plots in tfma.load_plots(evaluation_uri):
        if plots.slice_key.single_slice_keys:
            continue
        for key_and_value in plots.plot_keys_and_values:
            key = key_and_value.key
            if key.model_name not in CANDIDATE_MODEL_NAMES or key.name != TOP_LABEL_CALIBRATION:
                continue
            rows = []
            for bucket in key_and_value.value.calibration_histogram_buckets.buckets:
                count = bucket.num_weighted_examples.value
                rows.append([
                    round(bucket.lower_threshold_inclusive, 4), round(bucket.upper_threshold_exclusive, 4),
                    count,
                    bucket.total_weighted_label.value / count if count else 0.0,
                    bucket.total_weighted_refined_prediction.value / count if count else 0.0,
                ])  # fmt: skip
            return rows
    return []


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


def gold_comparison(evaluation_uri: str) -> GoldComparison | None:
    """Both models on the gold set with intervals, and the change gates' verdicts, as the Evaluator wrote
    them (None for an evaluation made before they existed)."""
    path = os.path.join(evaluation_uri, GOLD_COMPARISON_FILE)
    if not storage.exists(path):
        return None
    return GoldComparison.from_dict(json.loads(storage.read_text(path)))


def blessing_failures(evaluation_uri: str) -> list[str]:
    """Why the Evaluator refused to bless: TFMA's failed thresholds (the floor), then the refused changes."""
    comparison = gold_comparison(evaluation_uri)
    return validation_failures(evaluation_uri) + (comparison.refusals() if comparison else [])


def validation_failures(evaluation_uri: str) -> list[str]:
    """Why TFMA refused to bless: one line per failed threshold (metric, slice, value, bound)."""
    validation = tfma.load_validation_result(evaluation_uri)
    lines = []
    for per_slice in validation.metric_validations_per_slice:
        where = ""
        for key in per_slice.slice_key.single_slice_keys:
            if key.column == LABEL_KEY:
                where = f" [class {CLASS_NAMES[int(key.int64_value)]}]"
        for failure in per_slice.failures:
            name = failure.metric_key.name + (" change" if failure.metric_key.is_diff else "")
            lines.append(
                f"{name}{where} = {failure.metric_value.double_value.value:.4f}, "
                f"{threshold_text(failure.metric_threshold)}"
            )
    return lines
