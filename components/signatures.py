"""The exported model's serving signatures. They carry TFT's transform graph, so each takes raw data.

- `serving_default`: a batch of serialized `tf.Example` (string [batch]) with
  the raw `image` feature (784 int64 pixels, 0..255); a `label`, if present, is
  ignored. Returns `probabilities` (float32 [batch, 10]). TFMA evaluates this one.
- `predict_images`: raw pixels `images` (uint8 [batch, 28, 28]). Returns
  `probabilities` (float32 [batch, 10]), `class_ids` (int64 [batch]) and
  `class_names` (string [batch]).
- `classify`: TF Serving's Classify contract: serialized `tf.Example`s `inputs`
  (string [batch]); `classes` (string [batch, 10], the class names) and
  `scores` (float32 [batch, 10]); its method is marked Classify after export
  (`release/export.py`).
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_transform as tft

from core.vocabulary import (
    CLASS_IDS_OUTPUT,
    CLASS_NAMES,
    CLASS_NAMES_OUTPUT,
    CLASSES_OUTPUT,
    CLASSIFY_INPUT,
    CLASSIFY_SIGNATURE,
    EXAMPLES_INPUT,
    IMAGE_HEIGHT,
    IMAGE_KEY,
    IMAGE_WIDTH,
    IMAGES_INPUT,
    IMAGES_SIGNATURE,
    LABEL_KEY,
    PIXELS,
    PROBABILITIES_OUTPUT,
    SCORES_OUTPUT,
    SERVING_SIGNATURE,
    TRANSFORMED_IMAGE_KEY,
)


def make_serving_signatures(model: tf.keras.Model, tf_transform_output: tft.TFTransformOutput) -> dict:
    """The exported signatures (see the module docstring for their contracts).

    The model is called with `training=False`: Keras' random augmentation
    layers default to training mode when called without it, and would flip
    and shift served images.
    """
    model.tft_layer = tf_transform_output.transform_features_layer()
    raw_spec = tf_transform_output.raw_feature_spec()
    raw_spec.pop(LABEL_KEY, None)
    class_names = tf.constant(CLASS_NAMES)

    def probabilities_of(raw_features: dict[str, tf.Tensor]) -> tf.Tensor:
        return model(model.tft_layer(raw_features)[TRANSFORMED_IMAGE_KEY], training=False)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
    def serve_examples(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        return {PROBABILITIES_OUTPUT: probabilities_of(tf.io.parse_example(serialized, raw_spec))}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=CLASSIFY_INPUT)])
    def classify_examples(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        probabilities = probabilities_of(tf.io.parse_example(serialized, raw_spec))
        classes = tf.tile(class_names[tf.newaxis], [tf.shape(probabilities)[0], 1])
        return {CLASSES_OUTPUT: classes, SCORES_OUTPUT: probabilities}

    @tf.function(
        input_signature=[tf.TensorSpec([None, IMAGE_HEIGHT, IMAGE_WIDTH], tf.uint8, name=IMAGES_INPUT)]
    )
    def serve_images(images: tf.Tensor) -> dict[str, tf.Tensor]:
        probabilities = probabilities_of({IMAGE_KEY: tf.reshape(tf.cast(images, tf.int64), [-1, PIXELS])})
        class_ids = tf.argmax(probabilities, axis=1)
        return {
            PROBABILITIES_OUTPUT: probabilities,
            CLASS_IDS_OUTPUT: class_ids,
            CLASS_NAMES_OUTPUT: tf.gather(class_names, class_ids),
        }

    return {
        SERVING_SIGNATURE: serve_examples.get_concrete_function(),
        IMAGES_SIGNATURE: serve_images.get_concrete_function(),
        CLASSIFY_SIGNATURE: classify_examples.get_concrete_function(),
    }
