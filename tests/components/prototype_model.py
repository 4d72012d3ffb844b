"""A stand-in for the exported model that is right often enough to fit an accuracy estimator on, in a second.

Nearest class mean: each class's mean training image is its prototype, and the
probabilities are a softmax over minus the squared distances to them. On
Fashion-MNIST that is right about two times in three, confident on some images
and unsure on others, which is what an estimator needs to learn from. It has
the exported model's `predict_images` and `serving_default` contracts
(`components/signatures.py`), so the Trainer's estimator fit, the drift report
and `load_version` (warmup included) use it as they use the real one.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from core import vocabulary as vocab
from release.warmup import write_warmup

SHARPNESS = 0.05  # softmax temperature on squared distances of pixels in [0, 1]: some sure, some unsure


class _Prototypes(tf.Module):
    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        super().__init__()
        x = images.reshape(len(images), -1).astype(np.float32) / vocab.MAX_PIXEL
        means = np.stack([x[labels == k].mean(axis=0) for k in range(vocab.NUM_CLASSES)])
        self.means = tf.Variable(means, trainable=False)

    def probabilities(self, pixels: tf.Tensor) -> tf.Tensor:
        x = tf.cast(pixels, tf.float32) / float(vocab.MAX_PIXEL)
        distances = tf.reduce_sum(tf.square(x[:, tf.newaxis, :] - self.means[tf.newaxis]), axis=2)
        return tf.nn.softmax(-SHARPNESS * distances)


def build(export_dir: str, images: np.ndarray, labels: np.ndarray) -> str:
    """Write the model of the class means of `images` (uint8 [n, 28, 28]) to `export_dir`, with warmup."""
    model = _Prototypes(images, labels)
    spec = {vocab.IMAGE_KEY: tf.io.FixedLenFeature([vocab.PIXELS], tf.int64)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=vocab.EXAMPLES_INPUT)])
    def serve_examples(serialized):
        pixels = tf.io.parse_example(serialized, spec)[vocab.IMAGE_KEY]
        return {vocab.PROBABILITIES_OUTPUT: model.probabilities(pixels)}

    shape = [None, vocab.IMAGE_HEIGHT, vocab.IMAGE_WIDTH]

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.uint8, name=vocab.IMAGES_INPUT)])
    def serve_images(images):
        return {vocab.PROBABILITIES_OUTPUT: model.probabilities(tf.reshape(images, [-1, vocab.PIXELS]))}

    signatures = {
        vocab.SERVING_SIGNATURE: serve_examples.get_concrete_function(),
        vocab.IMAGES_SIGNATURE: serve_images.get_concrete_function(),
    }
    tf.saved_model.save(model, export_dir, signatures=signatures)
    write_warmup(export_dir)
    return export_dir
