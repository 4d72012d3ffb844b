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

LONG_RUN_STEPS, LONG_RUN_MOMENTUM, SHORT_RUN_MOMENTUM = 1000, 0.99, 0.9
KERAS_PACKAGE = "tf_keras"  # the Keras this project runs (`core` pins it)


def keep_autograph_out_of_keras() -> None:
    """Let AutoGraph leave tf_keras's own code as it is, as it leaves the `keras` package.

    AutoGraph converts the Python of every function a `tf.function` calls,
    except in the packages its rules name. TensorFlow 2.16's rules name `keras`
    but not `tf_keras`, so every model build, first training step and export
    transpiled Keras's internals anew: 1,142 functions in a small model's first
    epoch, 27.6 s of a small-loop Trainer's 46.8 s (py-spy, 2026-12-02).
    Keras's code is written to run unconverted, and later TensorFlow adds this
    very rule (`DoNotConvert("tf_keras")` in
    tensorflow/python/autograph/core/config.py); the rules are a private
    module, hence this one guarded function.
    """
    from tensorflow.python.autograph.core import config as autograph_config

    rules = autograph_config.CONVERSION_RULES
    if not any(isinstance(r, autograph_config.DoNotConvert) and r.matches(KERAS_PACKAGE) for r in rules):
        autograph_config.CONVERSION_RULES = (*rules, autograph_config.DoNotConvert(KERAS_PACKAGE))


keep_autograph_out_of_keras()


def _conv_block(x: tf.Tensor, filters: int, dropout: float, momentum: float) -> tf.Tensor:
    """Two 3x3 convolutions with batch normalisation, then 2x2 max pooling."""
    for _ in range(2):
        x = tf.keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = tf.keras.layers.BatchNormalization(momentum=momentum)(x)
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
    model = build_layers(config, steps_per_epoch * (epochs or config.epochs))
    compile_model(model, config, steps_per_epoch, epochs, learning_rate)
    return model


def build_layers(config: TrainingConfig, planned_steps: int) -> tf.keras.Model:
    """The CNN before `compile_model`: what a warm start restores the served weights into.

    Restoring before compiling matters: the optimizer's variables (its step
    counter, its learning rate) exist from `compile` on, and the served model,
    rebuilt for float32, has none to restore them from.
    """
    with layer_policy(config.precision):
        return _build_layers(config, batch_norm_momentum(config, planned_steps))


def compile_model(
    model: tf.keras.Model,
    config: TrainingConfig,
    steps_per_epoch: int,
    epochs: int | None = None,
    learning_rate: float | None = None,
) -> None:
    """Adam on a cosine decay over the planned epochs, with the configured label smoothing."""
    schedule = tf.keras.optimizers.schedules.CosineDecay(
        learning_rate or config.learning_rate, decay_steps=max(1, (epochs or config.epochs) * steps_per_epoch)
    )
    model.compile(
        optimizer=tf.keras.optimizers.Adam(schedule),
        loss=smoothed_loss(config.label_smoothing),
        metrics=[tf.keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=config.xla,
    )


def batch_norm_momentum(config: TrainingConfig, planned_steps: int) -> float:
    """The configured momentum, or for "auto" (0) one that suits the length of the training run.

    Batch normalisation serves moving averages of its batch statistics; with
    momentum 0.99 they average over about 100 steps and trail weights that
    still change fast. On the full data (2,544 steps) that does not matter,
    but a first day of 10,000 images has 432 steps: trained to 0.93 on its own
    batches, the model scored 0.7508 on the test set with 0.99 and 0.9005 with
    0.9 (`benchmarks/results/recipes.jsonl`).
    """
    if config.batch_norm_momentum:
        return config.batch_norm_momentum
    return LONG_RUN_MOMENTUM if planned_steps >= LONG_RUN_STEPS else SHORT_RUN_MOMENTUM


def smoothed_loss(label_smoothing: float):
    """Cross-entropy on class ids; with smoothing, each target keeps 1 - s and spreads s over all classes."""
    if not label_smoothing:
        return tf.keras.losses.SparseCategoricalCrossentropy()

    def loss(labels: tf.Tensor, probabilities: tf.Tensor) -> tf.Tensor:
        targets = tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), NUM_CLASSES)
        return tf.keras.losses.categorical_crossentropy(
            targets, probabilities, label_smoothing=label_smoothing
        )

    return loss


class RandomErasing(tf.keras.layers.Layer):
    """Training-only augmentation: with probability `rate`, blank a random rectangle of each image.

    Random erasing (Zhong et al., 2017): the rectangle covers 2-25 % of the
    image with an aspect ratio between 0.3 and 3.3 and is set to the
    background (0). Clothing must then be recognised from what is left, which
    regularises the network; at inference the layer passes images through.
    """

    def __init__(self, rate: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.rate = rate
        self.seed = seed

    @tf.autograph.experimental.do_not_convert  # plain Python: Keras passes `training` as a bool or None
    def call(self, images: tf.Tensor, training=None) -> tf.Tensor:
        if not training or not self.rate:
            return images
        batch = tf.shape(images)[0]
        height, width = images.shape[1], images.shape[2]

        def uniform(low: float, high: float) -> tf.Tensor:
            return tf.random.uniform([batch, 1, 1, 1], low, high, seed=self.seed)

        area, aspect = uniform(0.02, 0.25), tf.exp(uniform(tf.math.log(0.3), tf.math.log(3.3)))
        box_h = tf.clip_by_value(tf.sqrt(area * aspect) * height, 1.0, float(height))
        box_w = tf.clip_by_value(tf.sqrt(area / aspect) * width, 1.0, float(width))
        top = uniform(0.0, 1.0) * (height - box_h)
        left = uniform(0.0, 1.0) * (width - box_w)
        rows = tf.reshape(tf.range(height, dtype=tf.float32), [1, height, 1, 1])
        cols = tf.reshape(tf.range(width, dtype=tf.float32), [1, 1, width, 1])
        inside = (rows >= top) & (rows < top + box_h) & (cols >= left) & (cols < left + box_w)
        erase = inside & (uniform(0.0, 1.0) < self.rate)
        return tf.where(erase, tf.zeros_like(images), images)

    def get_config(self) -> dict:
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


class FlipAveraging(tf.keras.layers.Layer):
    """Test-time augmentation inside the model: outside training, average over each image and its mirror.

    Clothing is left-right symmetric enough that training flips images at
    random; a prediction that sees both orientations is steadier than one
    that sees a single view. Living in the model, it reaches every client of
    the SavedModel; in training `backbone` sees single images, so training
    costs nothing more.
    """

    def __init__(self, backbone: tf.keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone

    @tf.autograph.experimental.do_not_convert  # plain Python: Keras passes `training` as a bool or None
    def call(self, images: tf.Tensor, training=None) -> tf.Tensor:
        if training:
            return self.backbone(images, training=True)
        both = tf.concat([images, tf.reverse(images, axis=[2])], axis=0)
        direct, mirrored = tf.split(self.backbone(both, training=False), 2, axis=0)
        return (direct + mirrored) / 2.0

    def get_config(self) -> dict:
        return {**super().get_config(), "backbone": tf.keras.layers.serialize(self.backbone)}

    @classmethod
    def from_config(cls, config: dict) -> "FlipAveraging":
        config["backbone"] = tf.keras.layers.deserialize(config["backbone"])
        return cls(**config)


def layers_of(model: tf.keras.Model) -> list[tf.keras.layers.Layer]:
    """Every layer of `model`, those of nested models (the backbone) included."""
    return [module for module in model.submodules if isinstance(module, tf.keras.layers.Layer)]


def float32_for_serving(model: tf.keras.Model, config: TrainingConfig) -> tf.keras.Model:
    """The trained model computing in float32 throughout, whatever precision trained it.

    Mixed bfloat16 keeps the weights in float32 and only computes in bfloat16;
    exported as is, the served graph would run its convolutions in bfloat16,
    which a serving CPU without AVX512-BF16 emulates slowly (and TF Serving
    hosts are rarely the training host). So the same layers are rebuilt under
    the float32 policy and given the trained weights.
    """
    if all(layer.dtype_policy.compute_dtype != "bfloat16" for layer in layers_of(model)):
        return model
    with layer_policy("float32"):
        served = _build_layers(config, LONG_RUN_MOMENTUM)  # (momentum only matters in training)
    served.set_weights(model.get_weights())
    return served


def _build_layers(config: TrainingConfig, momentum: float) -> tf.keras.Model:
    inputs = tf.keras.Input(shape=(PIXELS,), name=TRANSFORMED_IMAGE_KEY)
    x = tf.keras.layers.Reshape((IMAGE_HEIGHT, IMAGE_WIDTH, 1))(inputs)
    if config.random_flip:
        x = tf.keras.layers.RandomFlip("horizontal", seed=config.seed)(x)
    if config.random_shift:
        x = tf.keras.layers.RandomTranslation(
            config.random_shift, config.random_shift, fill_mode="constant", seed=config.seed
        )(x)
    if config.random_erasing:
        x = RandomErasing(config.random_erasing, seed=config.seed)(x)
    if config.flip_averaging:
        backbone = _backbone(config, x.shape[1:], momentum)
        outputs = FlipAveraging(backbone, name=PROBABILITIES_OUTPUT, dtype="float32")(x)
        return tf.keras.Model(inputs, outputs, name="fashion_mnist_cnn")
    outputs = _backbone(config, x.shape[1:], momentum)(x)
    return tf.keras.Model(inputs, outputs, name="fashion_mnist_cnn")


def _backbone(config: TrainingConfig, image_shape: tf.TensorShape, momentum: float) -> tf.keras.Model:
    """The convolutional network proper: [batch, 28, 28, 1] images in, class probabilities out."""
    images = tf.keras.Input(shape=image_shape)
    x = images
    for filters in config.conv_filters:
        x = _conv_block(x, filters, config.dropout / 2, momentum)
    x = tf.keras.layers.Flatten()(x)
    x = tf.keras.layers.Dense(config.dense_units, use_bias=False)(x)
    x = tf.keras.layers.BatchNormalization(momentum=momentum)(x)
    x = tf.keras.layers.ReLU()(x)
    x = tf.keras.layers.Dropout(config.dropout)(x)
    outputs = tf.keras.layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32")(x)
    return tf.keras.Model(images, outputs, name=PROBABILITIES_OUTPUT)
