"""A small stand-in for the pushed Fashion-MNIST model, with its three signatures, built in a second.

The contracts are those of `components/signatures.py`: `predict_images` takes
uint8 [batch, 28, 28] and reshapes it to [-1, 784] as the real model does (so
a tensor of the wrong shape becomes several images there, the cost the
request-cost tests measure); `serving_default` and `classify` take serialized
`tf.Example`s with the 784 int64 `image` pixels. The weights are fixed, not
trained: the tests look at status codes and memory, not at accuracy.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from core import vocabulary as vocab
from release.export import mark_classify_method

HIDDEN_UNITS = 64


class _PixelsModel(tf.Module):
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        generator = np.random.default_rng(seed)
        self.hidden = tf.Variable(generator.normal(0, 0.05, (vocab.PIXELS, HIDDEN_UNITS)).astype(np.float32))
        self.out = tf.Variable(
            generator.normal(0, 0.05, (HIDDEN_UNITS, vocab.NUM_CLASSES)).astype(np.float32)
        )
        self.class_names = tf.constant(vocab.CLASS_NAMES)

    def probabilities(self, pixels: tf.Tensor) -> tf.Tensor:
        """int64 pixels [n, 784] (as the real model's Transform reads them) -> probabilities [n, 10]."""
        scaled = tf.cast(pixels, tf.float32) / 255.0
        return tf.nn.softmax(tf.nn.relu(scaled @ self.hidden) @ self.out)

    def from_examples(self, serialized: tf.Tensor) -> tf.Tensor:
        spec = {vocab.IMAGE_KEY: tf.io.FixedLenFeature([vocab.PIXELS], tf.int64)}
        return self.probabilities(tf.io.parse_example(serialized, spec)[vocab.IMAGE_KEY])


TRAINING_STEPS, LEARNING_RATE = 60, 0.01


def trained(images: np.ndarray, labels: np.ndarray, seed: int = 0) -> _PixelsModel:
    """Weights fitted on uint8 images [n, 28, 28] and their labels: full-batch Adam, a second on a CPU."""
    model = _PixelsModel(seed)
    pixels = tf.constant(images.reshape(len(images), vocab.PIXELS), tf.int64)
    weights = [model.hidden, model.out]
    optimizer = tf.keras.optimizers.Adam(LEARNING_RATE)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            probabilities = model.probabilities(pixels)
            loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(labels, probabilities))
        optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights, strict=True))

    for _ in range(TRAINING_STEPS):
        step()
    return model


def build(export_dir: str, seed: int = 0, model: _PixelsModel | None = None) -> str:
    """Write the SavedModel to `export_dir` with Classify marked on `classify`; return it.

    Another `seed` gives other weights: two versions whose answers tell them
    apart; `model` (from `trained`) replaces the random weights.
    """
    model = model or _PixelsModel(seed)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=vocab.EXAMPLES_INPUT)])
    def serve_examples(serialized):
        return {vocab.PROBABILITIES_OUTPUT: model.from_examples(serialized)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=vocab.CLASSIFY_INPUT)])
    def classify_examples(serialized):
        probabilities = model.from_examples(serialized)
        classes = tf.tile(model.class_names[tf.newaxis], [tf.shape(probabilities)[0], 1])
        return {vocab.CLASSES_OUTPUT: classes, vocab.SCORES_OUTPUT: probabilities}

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, vocab.IMAGE_HEIGHT, vocab.IMAGE_WIDTH], tf.uint8, name=vocab.IMAGES_INPUT)
        ]
    )
    def serve_images(images):
        probabilities = model.probabilities(tf.reshape(tf.cast(images, tf.int64), [-1, vocab.PIXELS]))
        class_ids = tf.argmax(probabilities, axis=1)
        return {
            vocab.PROBABILITIES_OUTPUT: probabilities,
            vocab.CLASS_IDS_OUTPUT: class_ids,
            vocab.CLASS_NAMES_OUTPUT: tf.gather(model.class_names, class_ids),
        }

    signatures = {
        vocab.SERVING_SIGNATURE: serve_examples.get_concrete_function(),
        vocab.IMAGES_SIGNATURE: serve_images.get_concrete_function(),
        vocab.CLASSIFY_SIGNATURE: classify_examples.get_concrete_function(),
    }
    tf.saved_model.save(model, export_dir, signatures=signatures)
    mark_classify_method(export_dir, vocab.CLASSIFY_SIGNATURE)
    return export_dir
