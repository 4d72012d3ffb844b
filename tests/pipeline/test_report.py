"""Pure parts of the run report: confused pairs and the text rendering."""

import numpy as np
import tensorflow_model_analysis as tfma

from components.features import CLASS_NAMES
from pipeline.report import format_report, most_confused_pairs, threshold_text


def test_most_confused_pairs_are_the_largest_off_diagonal_cells():
    matrix = np.diag([50] * 10)
    matrix[6, 0] = 12  # Shirt taken for T-shirt/top
    matrix[0, 6] = 9
    matrix[4, 2] = 9  # tie with the one above: lower true class first
    pairs = most_confused_pairs(matrix, count=3)
    assert pairs == [
        {"true": "Shirt", "predicted": "T-shirt/top", "examples": 12},
        {"true": "T-shirt/top", "predicted": "Shirt", "examples": 9},
        {"true": "Coat", "predicted": "Pullover", "examples": 9},
    ]


def test_format_report_says_why_a_model_was_not_pushed():
    report = {
        "run_id": "r1",
        "components": [{"component": "Trainer", "state": "COMPLETE", "seconds": 12.0}],
        "model": {
            "accuracy": 0.5,
            "examples": 300,
            "per_class": dict.fromkeys(CLASS_NAMES, 0.5),
            "blessed": False,
            "not_blessed_because": ["sparse_categorical_accuracy = 0.5000, must be >= 0.9"],
            "pushed": False,
        },
    }
    text = format_report(report)
    assert "test accuracy: 0.5000 on 300 examples" in text
    assert "blessed: no\n  sparse_categorical_accuracy = 0.5000, must be >= 0.9" in text
    assert text.endswith("pushed: no")


def test_threshold_text_states_bounds_in_words():
    floor = tfma.MetricThreshold(value_threshold=tfma.GenericValueThreshold(lower_bound={"value": 0.9}))
    change = tfma.MetricThreshold(
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={"value": -0.005}
        )
    )
    assert threshold_text(floor) == "must be >= 0.9"
    assert threshold_text(change) == "absolute change vs baseline must be >= -0.005"
