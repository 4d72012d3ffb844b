"""Reading TFMA's results: confused pairs and thresholds in words."""

import numpy as np
import tensorflow_model_analysis as tfma

from pipeline.evaluation import most_confused_pairs, threshold_text


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


def test_threshold_text_states_bounds_in_words():
    floor = tfma.MetricThreshold(value_threshold=tfma.GenericValueThreshold(lower_bound={"value": 0.9}))
    change = tfma.MetricThreshold(
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={"value": -0.005}
        )
    )
    assert threshold_text(floor) == "must be >= 0.9"
    assert threshold_text(change) == "absolute change vs baseline must be >= -0.005"
