"""The label gate: the served model's agreement with a new span's labels, and what it says when it is low."""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from components.label_gate import describe_disagreement, label_agreement
from core.examples import serialize_example
from core.vocabulary import (
    EXAMPLES_INPUT,
    IMAGE_KEY,
    NUM_CLASSES,
    PIXELS,
    PROBABILITIES_OUTPUT,
    SERVING_SIGNATURE,
)


class FirstPixelModel(tf.Module):
    """A stand-in served model that is always right on images whose first pixel holds their class."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
    def serve(self, serialized):
        pixels = tf.io.parse_example(serialized, {IMAGE_KEY: tf.io.FixedLenFeature([PIXELS], tf.int64)})
        return {PROBABILITIES_OUTPUT: tf.one_hot(pixels[IMAGE_KEY][:, 0], NUM_CLASSES)}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("served") / "model")
    module = FirstPixelModel()
    tf.saved_model.save(module, path, signatures={SERVING_SIGNATURE: module.serve.get_concrete_function()})
    return path


def write_span(path: Path, classes: np.ndarray, labels: np.ndarray) -> list[str]:
    """Images of `classes` (first pixel = class), labelled `labels`."""
    with tf.io.TFRecordWriter(str(path), "GZIP") as writer:
        for true_class, label in zip(classes, labels, strict=True):
            image = np.zeros((28, 28), np.uint8)
            image[0, 0] = true_class
            writer.write(serialize_example(image, int(label)))
    return [str(path)]


CLASSES = np.arange(3000) % NUM_CLASSES


def test_a_span_with_right_labels_agrees_fully(served: str, tmp_path: Path):
    agreement, per_class = label_agreement(
        served, write_span(tmp_path / "good.tfrecord.gz", CLASSES, CLASSES)
    )
    assert agreement == 1.0 and np.all(per_class == 1.0)


def test_shuffled_labels_fall_to_chance(served: str, tmp_path: Path):
    shuffled = np.random.default_rng(3).permutation(CLASSES)
    agreement, per_class = label_agreement(
        served, write_span(tmp_path / "bad.tfrecord.gz", CLASSES, shuffled)
    )
    assert agreement == pytest.approx(0.1, abs=0.03) and per_class.max() < 0.2


def test_labels_shifted_by_one_class_agree_with_nothing(served: str, tmp_path: Path):
    shifted = (CLASSES + 1) % NUM_CLASSES
    agreement, _ = label_agreement(served, write_span(tmp_path / "shifted.tfrecord.gz", CLASSES, shifted))
    assert agreement == 0.0


def test_the_refusal_names_the_agreement_the_threshold_and_the_worst_classes():
    per_class = np.linspace(0.05, 0.5, NUM_CLASSES)
    message = describe_disagreement(0.1, per_class, 0.7)
    assert "agrees with 10.0% of the new span's labels, below the 70%" in message
    assert "T-shirt/top 0.05, Trouser 0.10, Pullover 0.15" in message and "never trained on" in message
