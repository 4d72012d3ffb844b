"""A TFMA metric for what TFMA has only for binary models: calibration of a multi-class model's top label.

TFMA's `CalibrationPlot` and `Calibration` judge one binary score. For a
classifier, the question is whether its confidence means what it says: of the
images it answers with 90 % confidence, are 90 % right? `TopLabelCalibration`
buckets each example by the probability of its predicted class and counts,
per bucket, the examples, the correct ones and the summed confidence. It
yields the expected calibration error (ECE: the example-weighted mean gap
between accuracy and confidence over the buckets) as a metric, and the buckets
as TFMA's own `CalibrationHistogramBuckets` plot (label = correct, prediction
= confidence), so `tfma.load_plots` and TFMA's viewers read it like any plot.
The Evaluator loads this module by name (`MetricConfig.module`).
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import metric_types, metric_util
from tensorflow_model_analysis.proto import metrics_for_slice_pb2


class PerClassMetric(NamedTuple):
    """A TFMA binarized metric the Evaluator computes for each class: its metric key's name and settings."""

    key: str
    settings: dict[str, Any]


# Settings so that a class counts as predicted when it is the model's answer (the argmax, as in the
# confusion matrix), not when its probability passes TFMA's default 0.5. top_k=1 alone is not enough
# in TFMA 0.47: it sets the other classes' scores to -inf and compares with a -inf threshold, and a
# class that is never the answer then counts as predicted for every example; a 0.0 threshold (the
# answer's probability is at least 0.1) keeps the -inf scores out.
PER_CLASS_METRICS = {
    "Precision": PerClassMetric("precision", {"top_k": 1, "thresholds": [0.0]}),
    "Recall": PerClassMetric("recall", {"top_k": 1, "thresholds": [0.0]}),
    "BinaryAccuracy": PerClassMetric("binary_accuracy", {"top_k": 1, "threshold": 0.0}),
}


def per_class_metric_configs() -> list[tfma.MetricConfig]:
    """The per-class metrics as TFMA metric configs (binarize them by class in the `MetricsSpec`)."""
    return [
        tfma.MetricConfig(class_name=name, config=json.dumps(metric.settings))
        for name, metric in PER_CLASS_METRICS.items()
    ]


TOP_LABEL_CALIBRATION = "top_label_calibration"
EXPECTED_CALIBRATION_ERROR = "expected_calibration_error"
DEFAULT_BUCKETS = 10


class TopLabelCalibration(metric_types.Metric):
    """Expected calibration error of the top label, and its reliability buckets as a plot."""

    def __init__(self, name: str = TOP_LABEL_CALIBRATION, num_buckets: int = DEFAULT_BUCKETS):
        super().__init__(
            metric_util.merge_per_key_computations(_computations), name=name, num_buckets=num_buckets
        )


metric_types.register_metric(TopLabelCalibration)


def _computations(
    name: str = TOP_LABEL_CALIBRATION,
    num_buckets: int = DEFAULT_BUCKETS,
    eval_config: Any = None,
    model_name: str = "",
    output_name: str = "",
    example_weighted: bool = False,
) -> metric_types.MetricComputations:
    where = {"model_name": model_name, "output_name": output_name, "example_weighted": example_weighted}
    ece_key = metric_types.MetricKey(name=EXPECTED_CALIBRATION_ERROR, **where)
    plot_key = metric_types.PlotKey(name=name, **where)
    combiner = _TopLabelCombiner(ece_key, plot_key, eval_config, example_weighted, num_buckets)
    return [metric_types.MetricComputation(keys=[ece_key, plot_key], preprocessors=None, combiner=combiner)]


class _TopLabelCombiner(beam.CombineFn):
    """Per confidence bucket: weighted examples, weighted correct answers, weighted confidence."""

    def __init__(self, ece_key, plot_key, eval_config, example_weighted: bool, num_buckets: int):
        self._ece_key, self._plot_key = ece_key, plot_key
        self._eval_config = eval_config
        self._example_weighted = example_weighted
        self._num_buckets = num_buckets

    def create_accumulator(self) -> np.ndarray:
        return np.zeros((3, self._num_buckets))

    def add_input(self, accumulator: np.ndarray, element: metric_types.StandardMetricInputs) -> np.ndarray:
        label, predictions, weight = next(
            metric_util.to_label_prediction_example_weight(
                element,
                eval_config=self._eval_config,
                model_name=self._ece_key.model_name,
                output_name=self._ece_key.output_name,
                example_weighted=self._example_weighted,
                flatten=False,
                require_single_example_weight=True,
            )
        )
        actual = int(np.argmax(label)) if label.size > 1 else int(label.reshape(-1)[0])
        predicted = int(np.argmax(predictions))
        confidence = float(predictions[predicted])
        bucket = min(int(confidence * self._num_buckets), self._num_buckets - 1)
        weight = float(np.reshape(weight, -1)[0])
        accumulator[:, bucket] += (weight, weight * (predicted == actual), weight * confidence)
        return accumulator

    def merge_accumulators(self, accumulators) -> np.ndarray:
        return np.sum(list(accumulators), axis=0)

    def extract_output(self, accumulator: np.ndarray) -> dict:
        examples, correct, confidence = accumulator
        total = examples.sum()
        gaps = np.abs(correct - confidence)  # per bucket: examples x |accuracy - mean confidence|
        plot = metrics_for_slice_pb2.CalibrationHistogramBuckets()
        for i in range(self._num_buckets):
            plot.buckets.add(
                lower_threshold_inclusive=i / self._num_buckets,
                upper_threshold_exclusive=(i + 1) / self._num_buckets,
                num_weighted_examples={"value": examples[i]},
                total_weighted_label={"value": correct[i]},
                total_weighted_refined_prediction={"value": confidence[i]},
            )
        return {self._ece_key: float(gaps.sum() / total) if total else float("nan"), self._plot_key: plot}
