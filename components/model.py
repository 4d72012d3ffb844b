"""The Keras CNN that classifies transformed images (pixels already in [0, 1]).

Built with `tf.keras` under `TF_USE_LEGACY_KERAS=1`, the Keras that TFT's
serving layer and TFMA 0.47 are built on.
"""

import components  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow)

# isort: split
import tensorflow as tf

from components.features import IMAGE_HEIGHT, IMAGE_WIDTH, NUM_CLASSES, PIXELS, TRANSFORMED_IMAGE_KEY
from pipeline.config import TrainingConfig


def _conv_block(x: tf.Tensor, filters: int, dropout: float) -> tf.Tensor:
    """Two 3x3 convolutions with batch normalisation, then 2x2 max pooling."""
    for _ in range(2):
        x = tf.keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = tf.keras.layers.BatchNormalization()(x)
        x = tf.keras.layers.ReLU()(x)
    x = tf.keras.layers.MaxPooling2D()(x)
    return tf.keras.layers.Dropout(dropout)(x)


def build_model(config: TrainingConfig, steps_per_epoch: int) -> tf.keras.Model:
    """A compiled CNN: [batch, 784] floats in, [batch, 10] class probabilities out.

    Augmentation (horizontal flips and small shifts, which suit clothing; never
    vertical flips) lives in the model as layers that act only in training.
    The learning rate follows a cosine decay over the planned epochs.
    """
    inputs = tf.keras.Input(shape=(PIXELS,), name=TRANSFORMED_IMAGE_KEY)
    x = tf.keras.layers.Reshape((IMAGE_HEIGHT, IMAGE_WIDTH, 1))(inputs)
    if config.random_flip:
        x = tf.keras.layers.RandomFlip("horizontal", seed=config.seed)(x)
    if config.random_shift:
        x = tf.keras.layers.RandomTranslation(
            config.random_shift, config.random_shift, fill_mode="constant", seed=config.seed
        )(x)
    for filters in config.conv_filters:
        x = _conv_block(x, filters, config.dropout / 2)
    x = tf.keras.layers.Flatten()(x)
    x = tf.keras.layers.Dense(config.dense_units, use_bias=False)(x)
    x = tf.keras.layers.BatchNormalization()(x)
    x = tf.keras.layers.ReLU()(x)
    x = tf.keras.layers.Dropout(config.dropout)(x)
    outputs = tf.keras.layers.Dense(NUM_CLASSES, activation="softmax", name="probabilities")(x)
    model = tf.keras.Model(inputs, outputs, name="fashion_mnist_cnn")

    schedule = tf.keras.optimizers.schedules.CosineDecay(
        config.learning_rate, decay_steps=max(1, config.epochs * steps_per_epoch)
    )
    model.compile(
        optimizer=tf.keras.optimizers.Adam(schedule),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(),
        metrics=[tf.keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return model
