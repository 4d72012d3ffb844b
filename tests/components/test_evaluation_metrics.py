"""The top-label calibration metric the Evaluator adds: expected calibration error and reliability buckets."""

import numpy as np
import pytest
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import metric_types

from components.evaluation_metrics import EXPECTED_CALIBRATION_ERROR, TopLabelCalibration


def combine(examples: list[tuple[int, list[float]]], num_buckets: int = 10) -> dict:
    """Run the metric's combiner as TFMA does: two accumulators merged, then the output."""
    (computation,) = TopLabelCalibration(num_buckets=num_buckets).computations(
        eval_config=tfma.EvalConfig(model_specs=[tfma.ModelSpec(label_key="label")])
    )
    combiner = computation.combiner
    halves = [combiner.create_accumulator(), combiner.create_accumulator()]
    for i, (label, probabilities) in enumerate(examples):
        inputs = metric_types.StandardMetricInputs(
            labels=np.array([label]), predictions=np.array(probabilities), example_weights=np.array([1.0])
        )
        halves[i % 2] = combiner.add_input(halves[i % 2], inputs)
    output = combiner.extract_output(combiner.merge_accumulators(halves))
    return {key.name: value for key, value in output.items()}


def test_the_calibration_error_is_the_weighted_gap_between_accuracy_and_confidence():
    # Bucket 0.9-1.0: two answers at 0.95, one right (accuracy 0.5, confidence 0.95: gap 0.45 x 2).
    # Bucket 0.6-0.7: two answers at 0.65, both right (gap 0.35 x 2). ECE = (0.9 + 0.7) / 4 = 0.4.
    examples = [
        (0, [0.95, 0.05]), (1, [0.95, 0.05]),
        (1, [0.35, 0.65]), (1, [0.35, 0.65]),
    ]  # fmt: skip
    output = combine(examples)
    assert output[EXPECTED_CALIBRATION_ERROR] == pytest.approx(0.4)
    buckets = output["top_label_calibration"].buckets
    assert len(buckets) == 10
    assert (buckets[9].num_weighted_examples.value, buckets[9].total_weighted_label.value) == (2, 1)
    assert buckets[6].total_weighted_refined_prediction.value == pytest.approx(1.3)
    assert sum(b.num_weighted_examples.value for b in buckets) == 4


def test_a_model_whose_confidence_matches_its_accuracy_scores_zero():
    # 80 % confident, right 4 times in 5.
    output = combine([(0, [0.8, 0.2])] * 4 + [(1, [0.8, 0.2])])
    assert output[EXPECTED_CALIBRATION_ERROR] == pytest.approx(0.0, abs=1e-12)


def test_per_class_metrics_count_a_class_as_predicted_only_when_it_is_the_answer():
    """Binarized as the Evaluator does: class 2 is never the argmax, though its probability is 0.3-0.35."""
    import pandas as pd

    from components.evaluation_metrics import per_class_metric_configs

    rows = [(0, [0.6, 0.1, 0.3]), (0, [0.5, 0.2, 0.3]), (1, [0.3, 0.4, 0.3]), (2, [0.45, 0.2, 0.35])]
    frame = pd.DataFrame({"label": [r[0] for r in rows], "prediction": [np.array(r[1]) for r in rows]})
    spec = tfma.MetricsSpec(
        metrics=per_class_metric_configs(),
        binarize=tfma.BinarizationOptions(class_ids={"values": [0, 1, 2]}),
    )
    config = tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(label_key="label", prediction_key="prediction")], metrics_specs=[spec]
    )
    ((_, by_output),) = tfma.analyze_raw_data(frame, config).slicing_metrics
    metrics = {
        (name, int(sub_key.split(":")[1].split()[0])): value["doubleValue"]
        for per_key in by_output.values()
        for sub_key, values in per_key.items()
        for name, value in values.items()
    }
    assert metrics["precision", 0] == pytest.approx(2 / 3)  # answered 0 three times, right twice
    assert metrics["recall", 0] == 1.0 and metrics["precision", 1] == 1.0
    assert metrics["recall", 2] == 0.0 and metrics["binary_accuracy", 2] == 0.75  # never answered
    assert metrics["precision", 2] == "NaN"  # TFMA's undefined precision, left out of the run report
