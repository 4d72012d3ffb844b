"""TFX Trainer module: `run_fn` fits the CNN and exports it with its serving signatures.

The exported SavedModel carries TFT's transform graph, so every signature takes
raw data:

- `serving_default`: a batch of serialized `tf.Example` (string [batch]) with
  the raw `image` feature (784 int64 pixels, 0..255); a `label`, if present, is
  ignored. Returns `probabilities` (float32 [batch, 10]). TFMA evaluates this one.
- `predict_images`: raw pixels `images` (uint8 [batch, 28, 28]). Returns
  `probabilities` (float32 [batch, 10]), `class_ids` (int64 [batch]) and
  `class_names` (string [batch]).
- `classify`: TF Serving's Classify contract: serialized `tf.Example`s `inputs`
  (string [batch]); `classes` (string [batch, 10], the class names) and
  `scores` (float32 [batch, 10]); its method is marked Classify after export.
"""

from __future__ import annotations

import components  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow)

# isort: split
import dataclasses
import math

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tfx.components.trainer.fn_args_utils import FnArgs

from components.features import (
    CLASS_NAMES,
    IMAGE_HEIGHT,
    IMAGE_KEY,
    IMAGE_WIDTH,
    LABEL_KEY,
    PIXELS,
    TRANSFORMED_IMAGE_KEY,
)
from components.model import build_model
from pipeline.config import TrainingConfig
from serving.export import mark_classify_method
from serving.warmup import write_warmup

TRAINING_CONFIG_KEY = "training"
SERVING_SIGNATURE = "serving_default"
IMAGES_SIGNATURE = "predict_images"
CLASSIFY_SIGNATURE = "classify"


def training_config_from(custom_config: dict | None) -> TrainingConfig:
    """Rebuild the typed training configuration the pipeline put into `custom_config`."""
    values = dict((custom_config or {}).get(TRAINING_CONFIG_KEY, {}))
    known = {f.name for f in dataclasses.fields(TrainingConfig)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"custom_config[{TRAINING_CONFIG_KEY!r}]: unknown fields {sorted(unknown)}")
    if "conv_filters" in values:
        values["conv_filters"] = tuple(values["conv_filters"])
    return TrainingConfig(**values)


def load_transformed(
    file_patterns: list[str], tf_transform_output: tft.TFTransformOutput
) -> tuple[np.ndarray, np.ndarray]:
    """All transformed examples of a split as arrays (60,000 x 784 floats is 188 MB).

    Holding them in memory keeps the training loop free of parsing: each epoch
    is a shuffle and slices of one array.
    """
    files = [f for pattern in file_patterns for f in tf.io.gfile.glob(pattern)]
    spec = tf_transform_output.transformed_feature_spec()
    dataset = (
        tf.data.TFRecordDataset(files, compression_type="GZIP", num_parallel_reads=tf.data.AUTOTUNE)
        .batch(4096)
        .map(lambda batch: tf.io.parse_example(batch, spec), num_parallel_calls=tf.data.AUTOTUNE)
    )
    images, labels = [], []
    for batch in dataset:
        images.append(batch[TRANSFORMED_IMAGE_KEY].numpy())
        labels.append(batch[LABEL_KEY].numpy().reshape(-1))
    if not images:
        raise ValueError(f"no transformed examples under {file_patterns}")
    return np.concatenate(images), np.concatenate(labels)


def split_validation(images: np.ndarray, labels: np.ndarray, fraction: float, seed: int):
    """A random validation slice carved from the training split (never from the test split)."""
    order = np.random.default_rng(seed).permutation(len(images))
    n_val = int(len(images) * fraction)
    if n_val == 0:
        return (images[order], labels[order]), None
    val, train = order[:n_val], order[n_val:]
    return (images[train], labels[train]), (images[val], labels[val])


def make_dataset(
    images: np.ndarray, labels: np.ndarray, batch_size: int, shuffle: bool, seed: int
) -> tf.data.Dataset:
    dataset = tf.data.Dataset.from_tensor_slices(({TRANSFORMED_IMAGE_KEY: images}, labels))
    if shuffle:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


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

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        transformed = model.tft_layer(tf.io.parse_example(serialized, raw_spec))
        return {"probabilities": model(transformed[TRANSFORMED_IMAGE_KEY], training=False)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify_examples(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        probabilities = serve_examples(serialized)["probabilities"]
        classes = tf.tile(class_names[tf.newaxis], [tf.shape(probabilities)[0], 1])
        return {"classes": classes, "scores": probabilities}

    @tf.function(input_signature=[tf.TensorSpec([None, IMAGE_HEIGHT, IMAGE_WIDTH], tf.uint8, name="images")])
    def serve_images(images: tf.Tensor) -> dict[str, tf.Tensor]:
        raw = {IMAGE_KEY: tf.reshape(tf.cast(images, tf.int64), [-1, PIXELS])}
        probabilities = model(model.tft_layer(raw)[TRANSFORMED_IMAGE_KEY], training=False)
        class_ids = tf.argmax(probabilities, axis=1)
        return {
            "probabilities": probabilities,
            "class_ids": class_ids,
            "class_names": tf.gather(class_names, class_ids),
        }

    return {
        SERVING_SIGNATURE: serve_examples.get_concrete_function(),
        IMAGES_SIGNATURE: serve_images.get_concrete_function(),
        CLASSIFY_SIGNATURE: classify_examples.get_concrete_function(),
    }


def run_fn(fn_args: FnArgs) -> None:
    """TFX Trainer entry point: train on the transformed train split, export to `serving_model_dir`."""
    config = training_config_from(fn_args.custom_config)
    tf.keras.utils.set_random_seed(config.seed)
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)

    images, labels = load_transformed(fn_args.train_files, tf_transform_output)
    (train_x, train_y), validation = split_validation(images, labels, config.validation_fraction, config.seed)
    steps_per_epoch = math.ceil(len(train_x) / config.batch_size)
    if config.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)

    model = build_model(config, steps_per_epoch)
    callbacks = [tf.keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir, update_freq="epoch")]
    validation_data = None
    if validation is not None:
        validation_data = make_dataset(*validation, config.batch_size, shuffle=False, seed=config.seed)
        callbacks.append(
            tf.keras.callbacks.EarlyStopping(
                monitor="val_accuracy",
                patience=config.early_stopping_patience,
                restore_best_weights=True,
            )
        )
    model.fit(
        make_dataset(train_x, train_y, config.batch_size, shuffle=True, seed=config.seed).repeat(),
        validation_data=validation_data,
        epochs=config.epochs,
        steps_per_epoch=steps_per_epoch,
        callbacks=callbacks,
        verbose=2,
    )
    model.save(
        fn_args.serving_model_dir,
        save_format="tf",
        signatures=make_serving_signatures(model, tf_transform_output),
    )
    mark_classify_method(fn_args.serving_model_dir, CLASSIFY_SIGNATURE)
    write_warmup(fn_args.serving_model_dir)
