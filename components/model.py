"""The Keras CNN that classifies transformed images (pixels already in [0, 1]).

Built with `tf.keras` under `TF_USE_LEGACY_KERAS=1`, the Keras that TFT's
serving layer and TFMA 0.47 are built on.
"""

import contextlib

import tensorflow as tf

from core.config import TrainingConfig
from core.vocabulary import (
    IMAGE_HEIGHT,
    IMAGE_WIDTH,
    NUM_CLASSES,
    PIXELS,
    PROBABILITIES_OUTPUT,
    TRANSFORMED_IMAGE_KEY,
)


def _conv_block(x: tf.Tensor, filters: int, dropout: float) -> tf.Tensor:
    """Two 3x3 convolutions with batch normalisation, then 2x2 max pooling."""
    for _ in range(2):
        x = tf.keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = tf.keras.layers.BatchNormalization()(x)
        x = tf.keras.layers.ReLU()(x)
    x = tf.keras.layers.MaxPooling2D()(x)
    return tf.keras.layers.Dropout(dropout)(x)


def cpu_has_bfloat16(cpuinfo_path: str = "/proc/cpuinfo") -> bool:
    """True when the CPU computes bfloat16 natively (emulated bfloat16 would be slower than float32)."""
    try:
        with open(cpuinfo_path) as f:
            flags = f.read()
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def resolve_precision(precision: str) -> str:
    """`precision` (one of `core.config.PRECISIONS`) with "auto" decided for this CPU."""
    if precision == "auto":
        return "bfloat16" if cpu_has_bfloat16() else "float32"
    return precision


@contextlib.contextmanager
def layer_policy(precision: str):
    """Build layers under a Keras dtype policy without leaking it to the rest of the process."""
    previous = tf.keras.mixed_precision.global_policy()
    policy = "mixed_bfloat16" if resolve_precision(precision) == "bfloat16" else "float32"
    tf.keras.mixed_precision.set_global_policy(policy)
    try:
        yield
    finally:
        tf.keras.mixed_precision.set_global_policy(previous)


def build_model(
    config: TrainingConfig,
    steps_per_epoch: int,
    epochs: int | None = None,
    learning_rate: float | None = None,
) -> tf.keras.Model:
    """A compiled CNN: [batch, 784] floats in, [batch, 10] class probabilities out.

    Augmentation (horizontal flips and small shifts, which suit clothing; never
    vertical flips) lives in the model as layers that act only in training.
    The learning rate follows a cosine decay over the planned epochs
    (`epochs` and `learning_rate` override the config's, for a warm start). Under
    bfloat16 the weights stay float32 and the output layer computes in float32,
    so the served probabilities are float32 either way.
    """
    with layer_policy(config.precision):
        model = _build_layers(config)
    schedule = tf.keras.optimizers.schedules.CosineDecay(
        learning_rate or config.learning_rate, decay_steps=max(1, (epochs or config.epochs) * steps_per_epoch)
    )
    model.compile(
        optimizer=tf.keras.optimizers.Adam(schedule),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(),
        metrics=[tf.keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return model


def float32_for_serving(model: tf.keras.Model, config: TrainingConfig) -> tf.keras.Model:
    """The trained model computing in float32 throughout, whatever precision trained it.

    Mixed bfloat16 keeps the weights in float32 and only computes in bfloat16;
    exported as is, the served graph would run its convolutions in bfloat16,
    which a serving CPU without AVX512-BF16 emulates slowly (and TF Serving
    hosts are rarely the training host). So the same layers are rebuilt under
    the float32 policy and given the trained weights.
    """
    if all(layer.dtype_policy.compute_dtype != "bfloat16" for layer in model.layers):
        return model
    with layer_policy("float32"):
        served = _build_layers(config)
    served.set_weights(model.get_weights())
    return served


def _build_layers(config: TrainingConfig) -> tf.keras.Model:
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
    outputs = tf.keras.layers.Dense(
        NUM_CLASSES, activation="softmax", dtype="float32", name=PROBABILITIES_OUTPUT
    )(x)
    return tf.keras.Model(inputs, outputs, name="fashion_mnist_cnn")
