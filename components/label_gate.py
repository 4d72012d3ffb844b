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

How often is "about as often" depends on the model: a weak one (a first
model pushed with the floor at 0, gold accuracy near 0.3) agrees little with
right labels too, and an absolute bar (70 % agreement, as this gate had)
refused every correct span after it, so the loop could never recover. So the
bar is the served model's own measure: this gate answers the gold set as well
(labelled, never trained on) and compares the two agreements beyond chance.
Chance agreement of answers and labels whose class shares are q_k and l_k is
sum_k q_k l_k: what shuffled labels get in expectation, whatever the model.

    kept = (span agreement - span chance) / (gold accuracy - gold chance)

is about 1 for right labels, however weak the model; about 0 for shuffled
labels; below 0 for labels shifted by a class; about 1 - w when a share w of
the labels is scrambled. The run stops when the upper end of kept's 90 %
interval is below `min_relative_label_agreement` (0.7): with 95 % confidence
the span's labels keep less than that share of what the served model gets
right beyond chance. The interval is Fieller's for a ratio (the set of r for
which span - r * gold is within chance), each agreement a binomial proportion
(variance a(1 - a)/n), the chance terms taken as known. With a served model of
0.93 on the gold set and 10 balanced classes, 0.7 means an agreement near
0.68, about the absolute bar of before; with a model of 0.31, near 0.25.

A served model not clearly better than chance on the gold set (its own
agreement beyond chance within its interval of 0: Fieller's interval is then
unbounded) cannot tell right labels from wrong ones: the gate passes and says
so. Shuffled labels then get through to the Evaluator, whose floor still
stands; any model clearly above chance refuses them, since kept is about 0.

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
THRESHOLD_NAME = "min_relative_label_agreement"


class LabelDisagreementError(PipelineError):
    """The served model disagrees with the new span's labels far more than with the gold set's."""


@dataclass(frozen=True)
class Agreement:
    """How often a model's answers equal the labels of a set of examples, and how often chance would."""

    examples: int
    right: int  # answers equal to their label
    chance: float  # sum over classes of (share of answers) * (share of labels)
    per_class: np.ndarray  # agreement within each labelled class (0 where the class has no example)

    @classmethod
    def of(cls, labels: np.ndarray, answers: np.ndarray) -> "Agreement":
        n = len(labels)
        labelled = np.bincount(labels, minlength=NUM_CLASSES)
        right = np.bincount(labels, weights=answers == labels, minlength=NUM_CLASSES)
        chance = float(labelled @ np.bincount(answers, minlength=NUM_CLASSES)) / (n * n)
        return cls(n, round(right.sum()), chance, right / np.maximum(labelled, 1))

    @property
    def agreement(self) -> float:
        return self.right / self.examples

    @property
    def beyond_chance(self) -> float:
        return self.agreement - self.chance

    @property
    def variance(self) -> float:
        return self.agreement * (1 - self.agreement) / self.examples


def kept_share(span: Agreement, gold: Agreement, z: float = Z) -> Interval | None:
    """span's agreement beyond chance as a share of gold's, with Fieller's interval; None when gold's is
    not clearly above 0 (the served model cannot tell right labels from wrong ones)."""
    denominator = gold.beyond_chance**2 - z * z * gold.variance
    if gold.beyond_chance <= 0 or denominator <= 0:
        return None
    cross = span.beyond_chance * gold.beyond_chance
    numerator = span.beyond_chance**2 - z * z * span.variance
    root = math.sqrt(max(0.0, cross * cross - denominator * numerator))
    value = span.beyond_chance / gold.beyond_chance
    return Interval(value, (cross - root) / denominator, (cross + root) / denominator)


def labels_refused(kept: Interval | None, threshold: float) -> bool:
    """The rule: refused when the span's labels keep less than `threshold`, with 95 % confidence."""
    return kept is not None and kept.high < threshold


def describe_agreement(span: Agreement, gold: Agreement, kept: Interval | None) -> str:
    """Both agreements and what the span's labels keep, in words."""
    accuracy = wilson(gold.right, gold.examples)
    text = (
        f"the served model agrees with {span.agreement:.1%} of the new span's {span.examples} labels "
        f"(chance alone: {span.chance:.1%}) and with {gold.agreement:.1%} of the gold set's {gold.examples} "
        f"({LEVEL:.0%} interval {accuracy.low:.1%}-{accuracy.high:.1%}; chance {gold.chance:.1%})"
    )
    if kept is None:
        return text + ": not clearly better than chance on the gold set, it cannot check labels"
    return (
        f"{text}: the span's labels keep {kept.value:.0%} of what it gets right beyond chance "
        f"({LEVEL:.0%} interval {kept.low:.0%} to {kept.high:.0%})"
    )


def describe_disagreement(span: Agreement, gold: Agreement, kept: Interval, threshold: float) -> str:
    worst = np.argsort(span.per_class)[:3]
    classes = ", ".join(f"{CLASS_NAMES[i]} {span.per_class[i]:.2f}" for i in worst)
    return (
        f"{describe_agreement(span, gold, kept)}, below the {threshold:.0%} a span needs ({THRESHOLD_NAME}); "
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
