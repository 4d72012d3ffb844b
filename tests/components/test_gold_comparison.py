"""Intervals of gold accuracy, the paired change, and the change gates on constructed cases."""

import json

import numpy as np
import pytest

from components.gold_comparison import (
    LEVEL,
    GoldComparison,
    SliceFigures,
    change_refused,
    compare_on_gold,
    paired_change,
    wilson,
)
from core.config import EvaluationConfig
from core.vocabulary import CLASS_NAMES, NUM_CLASSES

MAX_CLASS_DROP = EvaluationConfig().max_class_drop
MAX_ACCURACY_DROP = EvaluationConfig().max_accuracy_drop
SHIRT = CLASS_NAMES.index("Shirt")


def paired_class(n: int, worse: int, better: int = 0, both_wrong: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Right/wrong of the candidate and the served model on the same n images of one class."""
    candidate, served = np.ones(n, bool), np.ones(n, bool)
    candidate[:worse] = False
    served[worse : worse + better] = False
    candidate[n - both_wrong :] = served[n - both_wrong :] = False
    return candidate, served


@pytest.mark.parametrize("worse", [1, 2])
def test_a_drop_within_chance_for_a_small_class_is_not_refused(worse: int):
    """30 images, 1 or 2 answered worse: -3.3 or -6.7 points, the second beyond the 0.05 allowed if read as
    a point estimate (what TFMA's change threshold refused); within chance for 30 images."""
    figures = SliceFigures.measure(*paired_class(30, worse, both_wrong=3), MAX_CLASS_DROP)
    assert figures.change.value == pytest.approx(-worse / 30)
    assert figures.change.low < -MAX_CLASS_DROP < figures.change.high
    assert not figures.refused
    if worse == 2:
        assert figures.change.value < -MAX_CLASS_DROP  # the point-estimate rule would have refused it


@pytest.mark.parametrize(("n", "worse"), [(30, 12), (1000, 90)])
def test_a_drop_clearly_beyond_the_allowance_is_refused_whatever_the_class_size(n: int, worse: int):
    figures = SliceFigures.measure(*paired_class(n, worse, better=worse // 10), MAX_CLASS_DROP)
    assert figures.change.high < -MAX_CLASS_DROP and figures.refused


def test_pairing_narrows_the_interval_when_the_models_share_their_mistakes():
    """Two models that err on the same 100 of 1000 images and differ on 10: the paired interval is far
    narrower than what the two accuracies' own intervals would give if their errors were independent."""
    figures = SliceFigures.measure(*paired_class(1000, worse=5, better=5, both_wrong=100), MAX_CLASS_DROP)
    unpaired_width = np.hypot(
        figures.candidate.high - figures.candidate.low, figures.served.high - figures.served.low
    )
    assert figures.change.high - figures.change.low < unpaired_width / 3


def simulate(n: int, cells: tuple[float, float, float], trials: int, seed: int = 0) -> np.ndarray:
    """Random paired tables: (both right, candidate only, served only, neither) counts per trial."""
    both, first, second = cells
    return np.random.default_rng(seed).multinomial(
        n, [both, first, second, 1 - both - first - second], trials
    )


@pytest.mark.parametrize(
    ("n", "cells"),
    [
        (30, (0.85, 0.03, 0.06)),
        (300, (0.5, 0.1, 0.1)),
        (1000, (0.88, 0.03, 0.05)),
        (10_000, (0.9, 0.02, 0.02)),
    ],
)
def test_the_paired_interval_covers_the_true_change_at_its_level(n: int, cells: tuple):
    true = cells[1] - cells[2]
    intervals = [paired_change(*table) for table in simulate(n, cells, trials=2000)]
    covered = np.mean([i.low <= true <= i.high for i in intervals])
    above = np.mean([i.high < true for i in intervals])  # what a refusal at the boundary would cost
    assert LEVEL - 0.03 < covered < 0.995 and above < 0.065


def test_the_paired_interval_agrees_with_a_paired_bootstrap_on_a_large_sample():
    rng = np.random.default_rng(1)
    candidate = rng.random(10_000) < 0.93
    served = candidate.copy()
    flipped = rng.random(10_000) < 0.04  # the two models answer 4 % of the images differently
    served[flipped] = ~served[flipped]
    figures = SliceFigures.measure(candidate, served, None)
    resamples = rng.integers(0, 10_000, (2000, 10_000))
    changes = candidate[resamples].mean(axis=1) - served[resamples].mean(axis=1)
    low, high = np.quantile(changes, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    assert figures.change.low == pytest.approx(low, abs=0.002) and figures.change.high == pytest.approx(
        high, abs=0.002
    )


@pytest.mark.parametrize(("right", "n"), [(30, 30), (27, 30), (900, 1000), (9401, 10_000)])
def test_wilson_intervals_hold_the_estimate_inside_zero_and_one(right: int, n: int):
    interval = wilson(right, n)
    assert 0.0 <= interval.low <= right / n <= interval.high <= 1.0 and interval.low < interval.high


@pytest.mark.parametrize(("n", "p"), [(30, 0.9), (1000, 0.81), (10_000, 0.94)])
def test_wilson_intervals_cover_at_their_level(n: int, p: float):
    draws = np.random.default_rng(2).binomial(n, p, 4000)
    covered = np.mean([(lambda i: i.low <= p <= i.high)(wilson(int(k), n)) for k in draws])
    assert LEVEL - 0.03 < covered < 0.97


def gold_set(per_class: int = 30) -> np.ndarray:
    return np.repeat(np.arange(NUM_CLASSES), per_class)


def test_compare_on_gold_refuses_only_the_class_that_clearly_lost_and_says_why():
    labels = gold_set()
    served = labels.copy()
    served[labels == 0] = 1  # the served model misses one T-shirt/top ...
    served[np.flatnonzero(labels == 0)[1:]] = 0
    candidate = labels.copy()
    candidate[np.flatnonzero(labels == SHIRT)[:12]] = 0  # ... the candidate 12 of 30 shirts
    candidate[np.flatnonzero(labels == 2)[:2]] = 4  # and 2 pullovers: within chance
    comparison = compare_on_gold(labels, candidate, served, MAX_ACCURACY_DROP, MAX_CLASS_DROP)
    assert [name for name, f in comparison.per_class.items() if f.refused] == ["Shirt"]
    (line,) = (r for r in comparison.refusals() if "[class" in r)
    assert line.startswith("paired accuracy change [class Shirt] = -0.4000, 90% interval [")
    assert "on 30 gold images, wholly below -0.05 (-max_class_drop)" in line
    overall = comparison.overall
    assert overall.examples == len(labels) and overall.change.value == pytest.approx((1 - 14) / len(labels))


def test_without_a_served_model_there_is_no_change_to_judge():
    labels = gold_set()
    comparison = compare_on_gold(labels, labels)
    assert comparison.overall.served is None and comparison.overall.change is None
    assert comparison.overall.candidate.value == 1.0 and comparison.refusals() == []


def test_a_negative_allowance_demands_a_gain_the_interval_shows():
    labels = gold_set()
    comparison = compare_on_gold(labels, labels, labels, max_accuracy_drop=-0.5, max_class_drop=-0.5)
    assert comparison.overall.refused and all(f.refused for f in comparison.per_class.values())
    assert "wholly below +0.5 (-max_accuracy_drop)" in comparison.refusals()[0]


def test_classes_missing_from_the_gold_set_are_left_out():
    labels = gold_set()
    labels = labels[labels != SHIRT]
    comparison = compare_on_gold(labels, labels, labels, 0.0, 0.0)
    assert "Shirt" not in comparison.per_class and len(comparison.per_class) == NUM_CLASSES - 1


def test_the_comparison_reads_back_from_its_json_identically():
    labels = gold_set()
    candidate = labels.copy()
    candidate[:5] = 9
    comparison = compare_on_gold(labels, candidate, labels, MAX_ACCURACY_DROP, MAX_CLASS_DROP)
    assert GoldComparison.from_dict(json.loads(comparison.to_json())) == comparison


@pytest.mark.parametrize(("n", "trials"), [(30, 1000), (1000, 300)])
def test_ten_classes_at_once_equal_models_are_almost_never_refused_boundary_ones_more_often_than_5_percent(
    n: int, trials: int
):
    """What the module doc claims about judging ten classes at once: each class's models disagree on 10 % of
    its images; equal on average, or the candidate exactly max_class_drop worse in every class."""
    rates = {}
    for name, cells in {"equal": (0.85, 0.05, 0.05), "at the allowance": (0.85, 0.025, 0.075)}.items():
        tables = simulate(n, cells, trials * NUM_CLASSES).reshape(trials, NUM_CLASSES, 4)
        refused = [any(change_refused(paired_change(*t), MAX_CLASS_DROP) for t in run) for run in tables]
        rates[name] = np.mean(refused)
    assert rates["equal"] < 0.02 and rates["at the allowance"] > 0.05, rates
