"""The label gate: the served model's agreement with a new span's labels, against its own on the gold set."""

from pathlib import Path

import numpy as np
import pytest

from components.label_gate import (
    Agreement,
    describe_agreement,
    describe_disagreement,
    kept_share,
    labels_refused,
)
from components.model_answers import labels_and_answers
from core.config import SpansConfig
from core.vocabulary import NUM_CLASSES
from tests.components.stand_in_models import save_pixel_model, write_examples

THRESHOLD = SpansConfig().min_relative_label_agreement
GOLD, SPAN = 10_000, 20_000  # the official test set; a span the size of the new-user trial's


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> str:
    return save_pixel_model(tmp_path_factory.mktemp("served") / "model")


def write_span(path: Path, classes: np.ndarray, labels: np.ndarray) -> list[str]:
    return [write_examples(path, classes, labels)]


CLASSES = np.arange(3000) % NUM_CLASSES


def agreement_on(model: str, files: list[str]) -> Agreement:
    return Agreement.of(*labels_and_answers(model, files))


def test_a_span_with_right_labels_agrees_fully(served: str, tmp_path: Path):
    span = agreement_on(served, write_span(tmp_path / "good.tfrecord.gz", CLASSES, CLASSES))
    assert span.agreement == 1.0 and np.all(span.per_class == 1.0) and span.examples == len(CLASSES)


def test_shuffled_labels_fall_to_chance(served: str, tmp_path: Path):
    shuffled = np.random.default_rng(3).permutation(CLASSES)
    span = agreement_on(served, write_span(tmp_path / "bad.tfrecord.gz", CLASSES, shuffled))
    assert span.agreement == pytest.approx(span.chance, abs=0.03) and span.per_class.max() < 0.2
    assert span.chance == pytest.approx(1 / NUM_CLASSES)  # balanced answers and labels


def test_labels_shifted_by_one_class_agree_with_nothing(served: str, tmp_path: Path):
    shifted = (CLASSES + 1) % NUM_CLASSES
    span = agreement_on(served, write_span(tmp_path / "shifted.tfrecord.gz", CLASSES, shifted))
    assert span.agreement == 0.0 < span.chance


def model_answers(labels: np.ndarray, accuracy: float, rng: np.random.Generator) -> np.ndarray:
    """A model right on a share `accuracy` of the images, otherwise answering another class at random."""
    right = rng.random(len(labels)) < accuracy
    wrong = (labels + rng.integers(1, NUM_CLASSES, len(labels))) % NUM_CLASSES
    return np.where(right, labels, wrong)


def measured(accuracy: float, scrambled: float = 0.0, seed: int = 0) -> tuple[Agreement, Agreement]:
    """A served model of `accuracy` on the gold set and on a span whose labels are right except a share
    `scrambled`, replaced by a permutation of themselves (shuffled labels: 1.0)."""
    rng = np.random.default_rng(seed)
    gold_labels, true_classes = rng.integers(0, NUM_CLASSES, GOLD), rng.integers(0, NUM_CLASSES, SPAN)
    gold = Agreement.of(gold_labels, model_answers(gold_labels, accuracy, rng))
    answers = model_answers(true_classes, accuracy, rng)
    labels = true_classes.copy()
    chosen = rng.random(SPAN) < scrambled
    labels[chosen] = rng.permutation(labels[chosen])
    return Agreement.of(labels, answers), gold


def test_a_weak_served_model_does_not_refuse_a_correctly_labelled_span():
    """The defect: a first model of gold accuracy near 0.3 agrees with right labels near 0.3, and the absolute
    bar (0.7) refused every span after it; measured against its own gold accuracy, the span passes."""
    span, gold = measured(accuracy=0.3)
    assert span.agreement < 0.7  # what the absolute bar refused
    kept = kept_share(span, gold)
    assert kept.low < 1 < kept.high and not labels_refused(kept, THRESHOLD)


def test_shuffled_labels_are_refused_with_a_good_served_model():
    span, gold = measured(accuracy=0.93, scrambled=1.0)
    kept = kept_share(span, gold)
    assert abs(kept.value) < 0.05 and labels_refused(kept, THRESHOLD)


def test_shuffled_labels_are_refused_with_a_weak_served_model_too():
    """Chance is what shuffled labels get whatever the model: a model of 0.3 still sees them, as any model
    clearly better than chance on the gold set does."""
    span, gold = measured(accuracy=0.3, scrambled=1.0)
    kept = kept_share(span, gold)
    assert kept.high < THRESHOLD / 2 and labels_refused(kept, THRESHOLD)


def test_a_served_model_no_better_than_chance_cannot_check_labels_and_passes():
    span, gold = measured(accuracy=0.1, scrambled=1.0)
    assert kept_share(span, gold) is None and not labels_refused(None, THRESHOLD)
    assert "cannot check labels" in describe_agreement(span, gold, None)


@pytest.mark.parametrize(("scrambled", "refused"), [(0.1, False), (0.5, True)])
def test_a_partly_scrambled_span_keeps_about_the_unscrambled_share(scrambled: float, refused: bool):
    span, gold = measured(accuracy=0.93, scrambled=scrambled)
    kept = kept_share(span, gold)
    assert kept.value == pytest.approx(1 - scrambled, abs=0.02)  # a scrambled label agrees as chance gives
    assert labels_refused(kept, THRESHOLD) is refused


def test_right_labels_at_the_threshold_are_refused_about_as_rarely_as_the_level_says():
    """Where the span truly keeps exactly the threshold, the one-sided 95 % bound refuses ~5 % of the time."""
    trials = 400
    refusals = sum(
        labels_refused(kept_share(*measured(accuracy=0.6, scrambled=1 - THRESHOLD, seed=seed)), THRESHOLD)
        for seed in range(trials)
    )
    assert 0.01 < refusals / trials < 0.09


def test_a_class_mix_unlike_the_gold_sets_does_not_read_as_wrong_labels():
    """A weak model right on three classes only, answering the first for all others (gold accuracy 0.3),
    and a rightly labelled span of mostly other classes: its agreement is far below the gold accuracy, but
    what right labels give in that class mix is what it gets."""
    rng = np.random.default_rng(5)
    gold_labels = rng.integers(0, NUM_CLASSES, GOLD)
    true_classes = rng.choice(NUM_CLASSES, SPAN, p=[0.03] * 3 + [0.91 / 7] * 7)

    def weak(labels: np.ndarray) -> np.ndarray:
        return np.where(labels < 3, labels, 0)

    gold = Agreement.of(gold_labels, weak(gold_labels))
    span = Agreement.of(true_classes, weak(true_classes))
    assert gold.agreement == pytest.approx(0.3, abs=0.02) and span.agreement < 0.1
    kept = kept_share(span, gold)
    assert kept.value == pytest.approx(1.0) and not labels_refused(kept, THRESHOLD)
    shuffled = Agreement.of(rng.permutation(true_classes), weak(true_classes))
    assert labels_refused(kept_share(shuffled, gold), THRESHOLD)


def test_the_refusal_names_the_agreements_what_is_kept_the_threshold_and_the_worst_classes():
    span, gold = measured(accuracy=0.93, scrambled=1.0)
    per_class = np.linspace(0.05, 0.5, NUM_CLASSES)
    right = np.round(per_class * span.labelled).astype(int)
    span = Agreement(span.labelled, right, span.chance)
    kept = kept_share(span, gold)
    message = describe_disagreement(span, gold, kept, THRESHOLD)
    assert f"agrees with {span.agreement:.1%} of the new span's {SPAN} labels" in message
    assert f"chance alone gives {span.chance:.1%}, right labels about " in message
    assert f"(its accuracy on the gold set, {gold.agreement:.1%} of {GOLD}, 90% interval" in message
    assert f"the labels keep {kept.value:.0%} of the way from chance to right labels" in message
    assert "below the 70% a span needs (--min-relative-label-agreement)" in message
    assert "T-shirt/top 0.05, Trouser 0.10, Pullover 0.15" in message and "never trained on" in message
