"""TensorFlow Transform step: raw `tf.Example` features -> what the model consumes.

The Transform component runs `preprocessing_fn` over the whole data set with
Beam, and the same graph is attached to the exported model (`trainer.py`), so a
served model receives raw pixels exactly as they are stored and scales them
itself: training and serving cannot skew.
"""

import tensorflow as tf

from core.vocabulary import IMAGE_KEY, LABEL_KEY, MAX_PIXEL, TRANSFORMED_IMAGE_KEY


def preprocessing_fn(inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """Scale `image` (int64 [batch, 784], 0..255) to float32 [0, 1]; pass `label` through.

    Serving requests carry no label; TFT's serving layer drops the outputs
    whose inputs are missing, so the label passes through only in training.
    """
    return {
        TRANSFORMED_IMAGE_KEY: tf.cast(inputs[IMAGE_KEY], tf.float32) / float(MAX_PIXEL),
        LABEL_KEY: inputs[LABEL_KEY],
    }
