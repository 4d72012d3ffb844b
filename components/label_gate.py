"""LabelGate: stop a new span whose labels the served model disagrees with far more than with the gold set's.

A span with wrong labels (shuffled, shifted by one class, a mislabelled
batch) has the same images and the same class shares as a good one: the
schema and drift gates cannot see it, and once it is part of a large window a
warm-started model still scores close to the served one, so the Evaluator's
change gates may let it through (seen on a full-data trial: a span of 20,000
shuffled labels in a window of 80,000 cost 0.35 point, under the 0.5 point
allowed). The served model can see it: on labelled data it never trained on,
it agrees with right labels about as often as its accuracy, with shuffled
labels only by chance.

How high that is depends on the model: a weak one (a first
model pushed with the floor at 0, gold accuracy near 0.3) agrees little with
right labels too, and an absolute bar (70 % agreement, as this gate had)
refused every correct span after it, so the loop could never recover. So the
bar is the served model's own measure: this gate answers the gold set as well
(labelled, never trained on) and asks how far the span's agreement gets from
what chance gives towards what right labels give:

    kept = (agreement - chance) / (right - chance)

- agreement: the served model's answers equal to the span's labels;
- chance: sum over classes of (share of its answers) * (share of the labels),
  what shuffled labels get in expectation, whatever the model;
- right: what right labels would give, the model's accuracy within each class
  on the gold set weighted by the span's class mix, sum_k l_k acc_k (a model
  right on few classes agrees little with a span of other classes, rightly
  labelled or not).

kept is about 1 for right labels however weak the model; about 0 for
shuffled labels; below 0 for labels shifted by a class; about 1 - w when a
share w of the labels is scrambled. The run stops when the upper end of
kept's 90 % interval is below `min_relative_label_agreement` (0.7): with 95 %
confidence the labels keep less than that share of the way. The interval is
Fieller's for a ratio (the set of r for which agreement - chance -
r (right - chance) is within chance), the span's agreement a binomial
proportion, right a sum of the gold set's per-class binomial proportions,
chance taken as known. With a served model of 0.93 on a balanced gold set and
a balanced span, 0.7 means an agreement near 0.68, about the absolute bar of
before; with a model of 0.31, near 0.25.

A served model whose right labels are not clearly above chance (right -
chance within its interval of 0: Fieller's interval is then unbounded) cannot
tell right labels from wrong ones: the gate passes and says so. Shuffled
labels then get through to the Evaluator, whose floor still stands; any
model clearly above chance refuses them, since kept is about 0. What the gate
cannot tell from wrong labels: a span of images harder than the gold set
for the model (chosen for its low confidence, say, or drifted with the drift
gate set to warn) agrees less with right labels than the gold set predicts
and keeps less than 1.

A refusal names both agreements, kept and its interval, the threshold and the
classes whose labels disagree most, stops the run before Transform, and the
span never joins a training window (it is recorded as refused in the span
ledger, `core/ledger.py`). The served model comes from
`components/served_model.py`; before the first push it is empty and the gate
passes.
"""

import logging
import math
from dataclasses import dataclass

import numpy as np
from tfx import types
from tfx.dsl.component.experimental.annotations import InputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts

from components.gold_comparison import LEVEL, Interval, Z, wilson
from components.loop_state import record_refusal
from components.model_answers import labels_and_answers
from components.served_model import served_model_dir
from core.errors import PipelineError
from core.examples import split_files
from core.vocabulary import CLASS_NAMES, NUM_CLASSES

log = logging.getLogger(__name__)
THRESHOLD_FLAG = "--min-relative-label-agreement"  # the setting, as `fmnist run` takes it


class LabelDisagreementError(PipelineError):
    """The served model disagrees with the new span's labels far more than with the gold set's."""


@dataclass(frozen=True)
class Agreement:
    """How often a model's answers equal the labels of a set of examples, per labelled class, and how often
    chance would make them equal."""

    labelled: np.ndarray  # examples per labelled class
    right: np.ndarray  # of which the model answered the label
    chance: float  # sum over classes of (share of answers) * (share of labels)

    @classmethod
    def of(cls, labels: np.ndarray, answers: np.ndarray) -> "Agreement":
        labelled = np.bincount(labels, minlength=NUM_CLASSES)
        right = np.bincount(labels[answers == labels], minlength=NUM_CLASSES)
        chance = float(labelled @ np.bincount(answers, minlength=NUM_CLASSES)) / len(labels) ** 2
        return cls(labelled, right, chance)

    @property
    def examples(self) -> int:
        return int(self.labelled.sum())

    @property
    def agreement(self) -> float:
        return float(self.right.sum()) / self.examples

    @property
    def per_class(self) -> np.ndarray:
        """Agreement within each labelled class (0 where the class has no example)."""
        return self.right / np.maximum(self.labelled, 1)

    @property
    def variance(self) -> float:
        return self.agreement * (1 - self.agreement) / self.examples


def right_label_agreement(span: Agreement, gold: Agreement) -> tuple[float, float]:
    """The agreement right labels would give on the span, and its variance: the served model's accuracy
    within each class of the gold set, weighted by the span's own class mix (a class the gold set lacks
    takes its overall accuracy)."""
    shares = span.labelled / span.examples
    present = gold.labelled > 0
    accuracy = np.where(present, gold.per_class, gold.agreement)
    counts = np.where(present, gold.labelled, gold.examples)
    return float(shares @ accuracy), float(np.sum(shares**2 * accuracy * (1 - accuracy) / counts))


def kept_share(span: Agreement, gold: Agreement, z: float = Z) -> Interval | None:
    """How far the span's agreement gets from chance towards what right labels give, with Fieller's interval;
    None when right labels are not clearly above chance (the served model cannot tell them from wrong)."""
    expected, expected_variance = right_label_agreement(span, gold)
    above, reach = span.agreement - span.chance, expected - span.chance
    denominator = reach**2 - z * z * expected_variance
    if reach <= 0 or denominator <= 0:
        return None
    cross = above * reach
    root = math.sqrt(max(0.0, cross * cross - denominator * (above**2 - z * z * span.variance)))
    return Interval(above / reach, (cross - root) / denominator, (cross + root) / denominator)


def labels_refused(kept: Interval | None, threshold: float) -> bool:
    """The rule: refused when the span's labels keep less than `threshold`, with 95 % confidence."""
    return kept is not None and kept.high < threshold


def describe_agreement(span: Agreement, gold: Agreement, kept: Interval | None) -> str:
    """The span's agreement, what chance and what right labels would give, and what the labels keep."""
    expected, _ = right_label_agreement(span, gold)
    accuracy = wilson(int(gold.right.sum()), gold.examples)
    text = (
        f"the served model agrees with {span.agreement:.1%} of the new span's {span.examples} labels; "
        f"chance alone gives {span.chance:.1%}, right labels about {expected:.1%} (its accuracy on the gold "
        f"set, {gold.agreement:.1%} of {gold.examples}, {LEVEL:.0%} interval {accuracy.low:.1%}-"
        f"{accuracy.high:.1%}, class by class in the span's class mix)"
    )
    if kept is None:
        return text + ": not clearly better than chance, it cannot check labels"
    return (
        f"{text}: the labels keep {kept.value:.0%} of the way from chance to right labels "
        f"({LEVEL:.0%} interval {kept.low:.0%} to {kept.high:.0%})"
    )


def describe_disagreement(span: Agreement, gold: Agreement, kept: Interval, threshold: float) -> str:
    worst = np.argsort(span.per_class)[:3]
    classes = ", ".join(f"{CLASS_NAMES[i]} {span.per_class[i]:.2f}" for i in worst)
    return (
        f"{describe_agreement(span, gold, kept)}, below the {threshold:.0%} a span needs ({THRESHOLD_FLAG}); "
        f"its labels look wrong (shuffled or shifted?). Least agreement by labelled class: {classes}. "
        "Stopped before Transform; the span is never trained on"
    )


def example_files(examples: types.Artifact) -> list[str]:
    """The files of every split of an Examples artifact."""
    return [
        f
        for split in artifact_utils.decode_split_names(examples.split_names)
        for f in split_files(artifact_utils.get_split_uri([examples], split))
    ]


@component
def LabelGate(
    examples: InputArtifact[standard_artifacts.Examples],
    gold_examples: InputArtifact[standard_artifacts.Examples],
    model: InputArtifact[standard_artifacts.Model],
    min_relative_label_agreement: Parameter[float],
    ledger: Parameter[str] = "",
) -> None:
    """Fail when the new span's labels keep clearly less than the threshold of the served model's skill."""
    served = served_model_dir(model)
    if served is None:
        log.info("no served model yet: the labels of the span are not checked")
        return
    span = Agreement.of(*labels_and_answers(served, example_files(examples)))
    gold = Agreement.of(*labels_and_answers(served, example_files(gold_examples)))
    kept = kept_share(span, gold)
    log.info("%s", describe_agreement(span, gold, kept))
    if labels_refused(kept, min_relative_label_agreement):
        message = describe_disagreement(span, gold, kept, min_relative_label_agreement)
        record_refusal(ledger, examples, "labels", message)
        raise LabelDisagreementError(message)
