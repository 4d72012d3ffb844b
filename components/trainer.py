"""TFX Trainer module: `run_fn` fits the CNN and exports it with its serving signatures.

The exported SavedModel carries TFT's transform graph, so every signature takes
raw data (contracts in `components/signatures.py`); after export the Trainer
marks the `classify` signature for TF Serving's Classify RPC, writes TF
Serving warmup requests into the model directory, and fits the model's
label-free accuracy estimator (`core/accuracy_estimate.py`) on held-out images,
written beside them (`<model>/assets.extra/accuracy_estimate.json`): the Pusher
copies the whole directory, so every pushed version carries its own.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from collections.abc import Callable

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tfx.components.trainer.fn_args_utils import FnArgs

from components.legacy_keras_tuner import keras_tuner
from components.model import build_layers, build_model, compile_model, float32_for_serving
from components.signatures import make_serving_signatures
from core.accuracy_estimate import Estimator, estimator_path, fit_from_model, save_estimator
from core.config import TrainingConfig
from core.versions import has_saved_model
from core.vocabulary import (
    CLASSIFY_SIGNATURE,
    IMAGE_HEIGHT,
    IMAGE_WIDTH,
    IMAGES_INPUT,
    IMAGES_SIGNATURE,
    LABEL_KEY,
    MAX_PIXEL,
    MODEL_NAME,
    PROBABILITIES_OUTPUT,
    TRANSFORMED_IMAGE_KEY,
)
from core.warm_start import WarmStart, write_warm_start
from release.export import mark_classify_method
from release.warmup import write_warmup
from serving.servable import load_version

TRAINING_CONFIG_KEY = "training"
# Held-out images the accuracy estimator is fitted on, at most. The fit answers them once, and once per
# fit-time shift (25 passes): on full data, 3,000 of the ~5,900 eval images take half the time of all of
# them; on the accuracy-estimate benchmark the overall figures stayed the same (2.13 points and 27/29
# fitted on 3,000, 2.27 and 27/29 on all) and the per-class interval held the truth as often (83 % and
# 84 %; docs/benchmarks.md, "What fitting costs, and the fit size").
ESTIMATOR_FIT_IMAGES = 3000
PREDICT_BATCH = 1024


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


def with_hyperparameters(config: TrainingConfig, hyperparameters: dict | None) -> TrainingConfig:
    """`config` with the values TFX's Tuner chose (`fn_args.hyperparameters`, a KerasTuner config), if any."""
    if not hyperparameters:
        return config
    values = keras_tuner.HyperParameters.from_config(hyperparameters).values
    return dataclasses.replace(config, **values)


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


def make_dataset(
    images: np.ndarray, labels: np.ndarray, batch_size: int, shuffle: bool, seed: int
) -> tf.data.Dataset:
    dataset = tf.data.Dataset.from_tensor_slices(({TRANSFORMED_IMAGE_KEY: images}, labels))
    if shuffle:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def training_data(
    fn_args: FnArgs, config: TrainingConfig, tf_transform_output: tft.TFTransformOutput
) -> tuple[tf.data.Dataset, tf.data.Dataset, int]:
    """The window's train splits (shuffled, repeated), its eval splits, and the steps of one epoch.

    Shared by the Trainer and the Tuner, so a trial sees exactly the data and
    epoch length the final training will.
    """
    train_x, train_y = load_transformed(fn_args.train_files, tf_transform_output)
    validation = load_transformed(fn_args.eval_files, tf_transform_output)
    steps_per_epoch = math.ceil(len(train_x) / config.batch_size)
    if config.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)
    train = make_dataset(train_x, train_y, config.batch_size, shuffle=True, seed=config.seed).repeat()
    evaluation = make_dataset(*validation, config.batch_size, shuffle=False, seed=config.seed)
    return train, evaluation, steps_per_epoch


def warm_start_from(
    model: tf.keras.Model, base_model_dir: str, build: Callable[[], tf.keras.Model]
) -> str | None:
    """Copy the weights of the model at `base_model_dir` into `model`; None if done, else why not.

    The base is the model serving now (TFX's `base_model` input). Weights are
    matched by their place in the model's object graph (a TensorFlow
    checkpoint restore), not by their order in a flat list, which differs
    between a freshly built model and one loaded back. A base with another
    architecture (the recipe changed) cannot be copied: the model then trains
    from scratch.

    The restore goes into a twin from `build` (the same recipe, not compiled),
    never into `model`: a served model exported as trained carries its
    optimizer, and a checkpoint restore keeps what it could not place yet for
    later, so `model`'s optimizer, made at `compile`, would take the served
    run's step counter and the cosine schedule would start at its end, a
    learning rate of 0 (seen in the week benchmark of 2026-12-02: four warm
    epochs with a flat loss). The twin's weights are then set in `model` as a
    list: both are built by the same code, so their order agrees.
    """
    checkpoint = tf.io.gfile.join(base_model_dir, tf.saved_model.VARIABLES_DIRECTORY, "variables")
    twin = build()
    try:
        twin.load_weights(checkpoint).assert_existing_objects_matched().expect_partial()
    except (ValueError, AssertionError) as err:  # a variable's shape differs / a layer has no counterpart
        return f"the served model's architecture differs ({str(err).split('. ')[0]})"
    model.set_weights(twin.get_weights())
    return None


def raw_images(transformed: np.ndarray) -> np.ndarray:
    """uint8 images [n, 28, 28] from Transform's output (pixels / 255, `components/preprocessing.py`).

    The Trainer is given transformed examples only, while the estimator must
    see held-out images through the served graph, which scales raw pixels
    itself. k / 255 in float32, times 255, rounds back to k exactly; anything
    else (the transform changed) is refused rather than fitted on.
    """
    pixels = np.rint(np.asarray(transformed, np.float64) * MAX_PIXEL)
    if (
        pixels.min() < 0
        or pixels.max() > MAX_PIXEL
        or not np.allclose(pixels / MAX_PIXEL, transformed, atol=1e-6)
    ):
        raise ValueError(
            "the transformed eval images are not raw pixels / 255: cannot recover what a client sends"
        )
    return pixels.astype(np.uint8).reshape(-1, IMAGE_HEIGHT, IMAGE_WIDTH)


def fit_sample(count: int, cap: int, seed: int) -> np.ndarray:
    """Indices of at most `cap` of `count` examples: a seeded random choice, in their original order."""
    if count <= cap:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, cap, replace=False))


def served_predictor(model_dir: str) -> Callable[[np.ndarray], np.ndarray]:
    """images -> probabilities from the exported model loaded as a server loads it (`predict_images`).

    The estimator must be fitted on the answers clients get: the served graph
    (TFT's scaling, the float32 CNN, flip averaging), not the Keras model
    that trained. Loading also replays the warmup requests, as a server does.
    """
    loaded = load_version(MODEL_NAME, 0, model_dir)

    def predict(images: np.ndarray) -> np.ndarray:
        parts = [
            loaded.run(IMAGES_SIGNATURE, {IMAGES_INPUT: images[i : i + PREDICT_BATCH]})[PROBABILITIES_OUTPUT]
            for i in range(0, len(images), PREDICT_BATCH)
        ]
        return np.concatenate(parts)

    return predict


def write_accuracy_estimator(
    model_dir: str, held_out: tuple[np.ndarray, np.ndarray], seed: int, cap: int = ESTIMATOR_FIT_IMAGES
) -> Estimator:
    """Fit the exported model's accuracy estimator on held-out examples; write it into the model.

    `held_out` is the window's `eval` splits as Transform wrote them (the share
    ImportExampleGen hashes off each span; never trained on, never the gold
    set, which must stay an independent measure). Early stopping chose the
    epoch on them, a slight optimism the estimator inherits. At most `cap` of
    them are used (`ESTIMATOR_FIT_IMAGES` says why).
    """
    transformed, labels = held_out
    chosen = fit_sample(len(labels), cap, seed)
    started = time.monotonic()
    estimator = fit_from_model(served_predictor(model_dir), raw_images(transformed[chosen]), labels[chosen])
    save_estimator(estimator, estimator_path(model_dir))
    logging.info(
        "accuracy estimator: %d of %d held-out images, accuracy %.4f there, %.1f s",
        len(chosen),
        len(labels),
        estimator.held_out_accuracy,
        time.monotonic() - started,
    )
    return estimator


def run_fn(fn_args: FnArgs) -> None:
    """TFX Trainer entry point: train on the window's transformed train splits, export to `serving_model_dir`.

    Early stopping watches each span's own `eval` split (ImportExampleGen's
    hash split), never the gold test set. With `warm_start` and a model
    serving now (`fn_args.base_model`, the ServedModel artifact; empty before
    the first push), training starts from its weights and runs
    `warm_start_epochs` at `warm_start_learning_rate`. The exported model
    carries its accuracy estimator, fitted on those eval splits
    (`write_accuracy_estimator`).
    """
    config = with_hyperparameters(training_config_from(fn_args.custom_config), fn_args.hyperparameters)
    tf.keras.utils.set_random_seed(config.seed)
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    train, validation, steps_per_epoch = training_data(fn_args, config, tf_transform_output)

    epochs, model = config.epochs, None
    if config.warm_start and fn_args.base_model and has_saved_model(fn_args.base_model):
        epochs = config.warm_start_epochs
        build = functools.partial(build_layers, config, steps_per_epoch * epochs)
        model = build()
        why_not = warm_start_from(model, fn_args.base_model, build)
        write_warm_start(fn_args.model_run_dir, WarmStart(fn_args.base_model, why_not is None, why_not))
        if why_not:
            logging.warning("no warm start: %s; training from scratch", why_not)
            epochs, model = config.epochs, None
        else:
            logging.info("warm start from %s: %d epochs", fn_args.base_model, epochs)
            compile_model(model, config, steps_per_epoch, epochs, config.warm_start_learning_rate)
    model = model or build_model(config, steps_per_epoch)
    callbacks = [
        tf.keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir, update_freq="epoch"),
        tf.keras.callbacks.EarlyStopping(
            monitor="val_accuracy", patience=config.early_stopping_patience, restore_best_weights=True
        ),
    ]
    model.fit(
        train,
        validation_data=validation,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        callbacks=callbacks,
        verbose=2,
    )
    served = float32_for_serving(model, config)
    served.save(
        fn_args.serving_model_dir,
        save_format="tf",
        signatures=make_serving_signatures(served, tf_transform_output),
    )
    mark_classify_method(fn_args.serving_model_dir, CLASSIFY_SIGNATURE)
    write_warmup(fn_args.serving_model_dir)
    held_out = load_transformed(fn_args.eval_files, tf_transform_output)
    write_accuracy_estimator(fn_args.serving_model_dir, held_out, config.seed)
