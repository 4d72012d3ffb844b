"""LabelGate: stop a new span whose labels the served model disagrees with far more than it should.

A span with wrong labels (shuffled, shifted by one class, a mislabelled
batch) has the same images and the same class shares as a good one: the
schema and drift gates cannot see it, and once it is part of a large window a
warm-started model still scores close to the served one, so the Evaluator's
change thresholds may let it through (seen on a full-data trial: a span of
20,000 shuffled labels in a window of 80,000 cost 0.35 point, under the 0.5
point allowed). The served model can: on a span it never trained on, its
accuracy against the span's own labels is near its test accuracy (0.92-0.95
here); against shuffled labels it is chance (0.10). Below
`min_label_agreement` the run stops before Transform, naming the agreement,
the threshold and the classes whose labels disagree most, and the span never
joins a training window (it is recorded as refused in the span ledger,
`core/ledger.py`). The served model comes from `components/served_model.py`;
before the first push it is empty and the gate passes.
"""

import logging

import numpy as np
import tensorflow as tf
from tfx.dsl.component.experimental.annotations import InputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts

from components.loop_state import record_refusal
from components.served_model import served_model_dir
from core.errors import PipelineError
from core.examples import compression_of, split_files
from core.vocabulary import CLASS_NAMES, EXAMPLES_INPUT, LABEL_KEY, PROBABILITIES_OUTPUT, SERVING_SIGNATURE

log = logging.getLogger(__name__)
BATCH = 1024


class LabelDisagreementError(PipelineError):
    """The served model disagrees with the new span's labels far more than with the test set's."""


def label_agreement(model_dir: str, files: list[str]) -> tuple[float, np.ndarray]:
    """The served model's accuracy on the examples in `files`, and per true class its accuracy."""
    predict = tf.saved_model.load(model_dir).signatures[SERVING_SIGNATURE]
    right, seen = np.zeros(len(CLASS_NAMES)), np.zeros(len(CLASS_NAMES))
    spec = {LABEL_KEY: tf.io.FixedLenFeature([], tf.int64)}
    for file in files:
        for batch in tf.data.TFRecordDataset(file, compression_of(file)).batch(BATCH):
            labels = tf.io.parse_example(batch, spec)[LABEL_KEY].numpy()
            answers = predict(**{EXAMPLES_INPUT: batch})[PROBABILITIES_OUTPUT].numpy().argmax(axis=1)
            np.add.at(seen, labels, 1)
            np.add.at(right, labels, answers == labels)
    if not seen.sum():
        raise PipelineError(f"{', '.join(files) or 'no files'}: no examples to check the labels of")
    return float(right.sum() / seen.sum()), right / np.maximum(seen, 1)


def describe_disagreement(agreement: float, per_class: np.ndarray, threshold: float) -> str:
    worst = np.argsort(per_class)[:3]
    classes = ", ".join(f"{CLASS_NAMES[i]} {per_class[i]:.2f}" for i in worst)
    return (
        f"the served model agrees with {agreement:.1%} of the new span's labels, below the "
        f"{threshold:.0%} a span needs (min_label_agreement); its labels look wrong "
        f"(shuffled or shifted?). Least agreement by labelled class: {classes}. Stopped before Transform; "
        "the span is never trained on"
    )


@component
def LabelGate(
    examples: InputArtifact[standard_artifacts.Examples],
    model: InputArtifact[standard_artifacts.Model],
    min_label_agreement: Parameter[float] = 0.5,
    ledger: Parameter[str] = "",
) -> None:
    """Fail when the served model's accuracy on every split of the new span is below the threshold."""
    served = served_model_dir(model)
    if served is None:
        log.info("no served model yet: the labels of the span are not checked")
        return
    files = [
        f
        for split in artifact_utils.decode_split_names(examples.split_names)
        for f in split_files(artifact_utils.get_split_uri([examples], split))
    ]
    agreement, per_class = label_agreement(served, files)
    log.info("the served model agrees with %.4f of the new span's labels", agreement)
    if agreement < min_label_agreement:
        message = describe_disagreement(agreement, per_class, min_label_agreement)
        record_refusal(ledger, examples, "labels", message)
        raise LabelDisagreementError(message)
