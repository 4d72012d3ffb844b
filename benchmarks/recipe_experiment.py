"""One training recipe on the full data, outside TFX: test accuracy and seconds per epoch.

    python benchmarks/recipe_experiment.py '{"label_smoothing": 0.1, "random_erasing": 0.5}'

A quick way to compare recipes before a full pipeline benchmark: the same
`build_model` and input pipeline the Trainer uses, the verified official files,
the same 10 % validation carve-out for early stopping, then the served
(float32) model on the official 10,000 test images, with and without flip
averaging applied outside the model. The argument is a JSON object of
`TrainingConfig` overrides. One JSON line is appended to
benchmarks/results/recipes.jsonl and printed. Seconds per epoch are only
comparable between experiments run one after another on an idle host.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import core  # noqa: F401  (first: pins Keras before TensorFlow loads)

# isort: split
import tensorflow as tf

from components.model import build_model, float32_for_serving
from components.trainer import make_dataset
from core.config import TrainingConfig
from core.vocabulary import MAX_PIXEL, PIXELS
from ingest.prepare import DEBIAN_DIR, OFFICIAL_FILES, parse_split, read_split

REPO = Path(__file__).resolve().parent.parent
VALIDATION_SHARE = 0.1


def official(split: str) -> tuple[np.ndarray, np.ndarray]:
    files = OFFICIAL_FILES[split]
    images, labels = parse_split(read_split(DEBIAN_DIR, files), split, files)
    return images.reshape(-1, PIXELS).astype(np.float32) / MAX_PIXEL, labels.astype(np.int64)


class EpochTimer(tf.keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, _epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, _epoch, logs=None):
        self.seconds.append(round(time.perf_counter() - self.started, 1))


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float((probabilities.argmax(axis=1) == labels).mean())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("overrides", help="JSON object of TrainingConfig fields")
    parser.add_argument(
        "--train-images", type=int, default=0, help="train on this many images (a small span); 0: all"
    )
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "recipes.jsonl"))
    args = parser.parse_args()
    overrides = json.loads(args.overrides)
    if "conv_filters" in overrides:
        overrides["conv_filters"] = tuple(overrides["conv_filters"])
    config = TrainingConfig(**{"flip_averaging": False, **overrides})
    x, y = official("train")
    test_x, test_y = official("test")
    order = np.random.default_rng(0).permutation(len(x))
    cut = int(len(x) * VALIDATION_SHARE)
    validation, train = order[:cut], order[cut:]
    if args.train_images:  # a small span: its own 10 % for validation, as ImportExampleGen splits it
        chosen = order[: args.train_images]
        cut = int(len(chosen) * VALIDATION_SHARE)
        validation, train = chosen[:cut], chosen[cut:]

    tf.keras.utils.set_random_seed(config.seed)
    steps = int(np.ceil(len(train) / config.batch_size))
    model = build_model(config, steps)
    timer = EpochTimer()
    started = time.perf_counter()
    model.fit(
        make_dataset(x[train], y[train], config.batch_size, True, config.seed).repeat(),
        validation_data=make_dataset(x[validation], y[validation], config.batch_size, False, config.seed),
        epochs=config.epochs,
        steps_per_epoch=steps,
        verbose=0,
        callbacks=[
            timer,
            tf.keras.callbacks.EarlyStopping(
                monitor="val_accuracy", patience=config.early_stopping_patience, restore_best_weights=True
            ),
        ],
    )
    served = float32_for_serving(model, config)
    direct = served.predict(test_x, batch_size=1000, verbose=0)
    mirrored = test_x.reshape(-1, 28, 28)[:, :, ::-1].reshape(-1, PIXELS)
    averaged = (direct + served.predict(mirrored, batch_size=1000, verbose=0)) / 2
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "overrides": overrides,
        "train_images": len(train) + len(validation),
        "accuracy": accuracy(direct, test_y),
        "accuracy_with_flip_averaging": accuracy(averaged, test_y),
        "train_seconds": round(time.perf_counter() - started, 1),
        "epoch_seconds": timer.seconds,
    }
    line = json.dumps(result)
    with open(args.output, "a") as out:
        out.write(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
