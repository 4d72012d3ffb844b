"""Stand-in served models whose answers a test chooses per image, and Examples files for them."""

from pathlib import Path

import numpy as np
import tensorflow as tf

from core.examples import serialize_example
from core.vocabulary import (
    EXAMPLES_INPUT,
    IMAGE_KEY,
    NUM_CLASSES,
    PIXELS,
    PROBABILITIES_OUTPUT,
    SERVING_SIGNATURE,
)


class PixelModel(tf.Module):
    """Answers the class in an image's first pixel, moved on by its second pixel when `follows_second`.

    With the second pixel at 0 both kinds are right on images whose first pixel holds their class; a
    second pixel of 1 makes only the kind that follows it answer the next class.
    """

    def __init__(self, follows_second: bool):
        super().__init__()
        self.follows_second = follows_second

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
    def serve(self, serialized):
        pixels = tf.io.parse_example(serialized, {IMAGE_KEY: tf.io.FixedLenFeature([PIXELS], tf.int64)})
        answer = pixels[IMAGE_KEY][:, 0] + (pixels[IMAGE_KEY][:, 1] if self.follows_second else 0)
        return {PROBABILITIES_OUTPUT: tf.one_hot(answer % NUM_CLASSES, NUM_CLASSES)}


def save_pixel_model(path: Path, follows_second: bool = False) -> str:
    module = PixelModel(follows_second)
    tf.saved_model.save(
        module, str(path), signatures={SERVING_SIGNATURE: module.serve.get_concrete_function()}
    )
    return str(path)


def write_examples(
    path: Path, classes: np.ndarray, labels: np.ndarray, second: np.ndarray | None = None
) -> str:
    """Images of `classes` (first pixel = class, second pixel = `second`, else 0), labelled `labels`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path), "GZIP") as writer:
        for i, (true_class, label) in enumerate(zip(classes, labels, strict=True)):
            image = np.zeros((28, 28), np.uint8)
            image[0, 0] = true_class
            image[0, 1] = 0 if second is None else second[i]
            writer.write(serialize_example(image, int(label)))
    return str(path)
