"""Accuracy against window size in the daily warm-started loop, outside TFX.

    python benchmarks/window_experiment.py --windows 5000 10000 20000 0

Why: the year benchmark's bounded window (10,000 images) ended 1.8 points below
an unbounded one, and a 60-day pipeline run per window size takes hours. This
replays the same 60 days with the Trainer's own `build_model`, warm start and
data split, minus TFX: day d's span is official training images
[(d-1)*1000, d*1000) with its last 10 % held out for early stopping, as the
year benchmark writes them; the model and schedule are the year benchmark's
(conv 16-32, dense 64, batch 128, 6 epochs from scratch on day 1, then 2
warm-start epochs a day from the served model, at its warm-start learning rate
or `--warm-start-learning-rate`); the window is the newest whole
spans that fit in the window size (0: every span). The day's candidate is
served when its gold accuracy is at least 0.5 and no more than 2 points below
the served model's (the year benchmark's floor and overall drop; the paired
interval and the per-class gate are left out). Gold: the first 2,000 official
test images, as the year benchmark's.

Other ways to train a bounded window, one change a call: `--warm-start-epochs`,
`--warm-start-learning-rate`, `--older-spans` (part of the window drawn each day
from the older spans) and `--keep-served` (the candidate's weights mixed with
the served model's); `--threads 1` keeps a call to one core, so that two run
side by side (benchmarks/results/window-tries.json holds what they gave).

Writes benchmarks/results/window.json and window.png, and prints a table.
Figures are comparable within one call only (one process, one host).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
from invocation import command_line
from recipe_experiment import accuracy, official
from year_flags import RUN_FLAGS

import core  # noqa: F401  (first: pins Keras before TensorFlow loads)

# isort: split
import tensorflow as tf

from cli.flags import add_config_flags, build_config, given
from components.model import build_layers, build_model, compile_model, float32_for_serving
from components.trainer import make_dataset
from core.config import EvaluationConfig, TrainingConfig

REPO = Path(__file__).resolve().parent.parent


def year_benchmark_settings(cls: type):
    """One section of the year benchmark's configuration, read from its `fmnist run` flags (RUN_FLAGS)
    rather than copied, so the replay follows the benchmark if its flags change."""
    parser = argparse.ArgumentParser()
    add_config_flags(parser, cls)
    known, _ = parser.parse_known_args(RUN_FLAGS)  # the other sections' flags are not this one's
    return build_config(known, cls)


GATES = year_benchmark_settings(EvaluationConfig)  # its floor and overall drop gate the replayed days
YEAR_TRAINING = year_benchmark_settings(TrainingConfig)
WARM_START_FLAGS = [
    "warm_start_epochs",
    "warm_start_learning_rate",
]  # `fmnist run`'s own flags, changeable here
EVAL_SHARE = 0.1
LAST_DAYS = 10  # the summary's mean: one day's gold accuracy moves by about half a point by chance


def window_days(day: int, span_images: int, window_images: int, older: int = 0) -> list[int]:
    """The newest whole spans up to `day` that fit in `window_images` (the newest always; 0: all),
    or, with `older`, that many of them drawn afresh each day from every span before the newest
    others, so that a bounded window keeps revisiting the whole history."""
    fit = day if not window_images else max(1, window_images // span_images)
    newest = list(range(max(1, day - fit + older + 1), day + 1)) if older < fit else [day]
    before = np.arange(1, newest[0])
    draw = np.random.default_rng(day).choice(before, min(fit - len(newest), len(before)), replace=False)
    return sorted([*map(int, draw), *newest])


def span_rows(days: list[int], span_images: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the window's train and eval parts: each span's last 10 % is its eval split."""
    cut = span_images - int(span_images * EVAL_SHARE)
    train = [np.arange(cut) + (d - 1) * span_images for d in days]
    held = [np.arange(cut, span_images) + (d - 1) * span_images for d in days]
    return np.concatenate(train), np.concatenate(held)


def train_day(
    x,
    y,
    days: list[int],
    span_images: int,
    served: tf.keras.Model | None,
    config: TrainingConfig,
    keep_served: float = 0.0,
) -> tf.keras.Model:
    """One day's candidate: from scratch, or `served`'s weights for the warm-start epochs."""
    train, held = span_rows(days, span_images)
    steps = int(np.ceil(len(train) / config.batch_size))
    tf.keras.utils.set_random_seed(config.seed)
    if served is None:
        epochs, model = config.epochs, build_model(config, steps)
    else:
        epochs = config.warm_start_epochs
        model = build_layers(config, steps * epochs)
        model.set_weights(served.get_weights())
        compile_model(model, config, steps, epochs, config.warm_start_learning_rate)
    model.fit(
        make_dataset(x[train], y[train], config.batch_size, True, config.seed).repeat(),
        validation_data=make_dataset(x[held], y[held], config.batch_size, False, config.seed),
        epochs=epochs,
        steps_per_epoch=steps,
        verbose=0,
        callbacks=[
            tf.keras.callbacks.EarlyStopping(
                monitor="val_accuracy", patience=config.early_stopping_patience, restore_best_weights=True
            )
        ],
    )
    if served is not None and keep_served:  # the day's candidate: a weighted mean with the served model
        pairs = zip(served.get_weights(), model.get_weights(), strict=True)
        model.set_weights([keep_served * s + (1 - keep_served) * t for s, t in pairs])
    return model


def replay(window_images: int, args, data, config: TrainingConfig) -> list[dict]:
    """The loop's days for one window size: train, gate against the served model, serve or not."""
    x, y, gold_x, gold_y = data
    served, served_accuracy, rows = None, None, []
    for day in range(1, args.days + 1):
        days = window_days(day, args.span_images, window_images, args.older_spans)
        started = time.perf_counter()
        candidate = train_day(x, y, days, args.span_images, served, config, args.keep_served)
        seconds = time.perf_counter() - started
        score = accuracy(float32_for_serving(candidate, config).predict(gold_x, 1000, verbose=0), gold_y)
        passes = score >= GATES.accuracy_floor and (
            served_accuracy is None or score >= served_accuracy - GATES.max_accuracy_drop
        )
        if passes:
            served, served_accuracy = candidate, score
        rows.append(
            {
                "day": day,
                "window_images": len(days) * args.span_images,
                "accuracy": round(score, 4),
                "served_accuracy": round(served_accuracy or 0.0, 4),
                "pushed": passes,
                "train_s": round(seconds, 1),
            }
        )
        label = window_images or "all"
        print(f"window {label}: day {day}: {len(days)} spans, {score:.4f}, {seconds:.1f} s", flush=True)
    return rows


def summary(variants: dict[str, list[dict]]) -> dict:
    """Per window: the last day's accuracy, the mean of the last `LAST_DAYS` days, the last day's
    seconds, and the gap to the unbounded window ("0") on the last day, in points."""
    out = {}
    for name, rows in variants.items():
        out[name] = {
            "last_day_accuracy": rows[-1]["accuracy"],
            "mean_accuracy_last_days": round(float(np.mean([r["accuracy"] for r in rows[-LAST_DAYS:]])), 4),
            "last_day_train_s": rows[-1]["train_s"],
        }
    if "0" in variants:
        for name in out:
            gap = out[name]["last_day_accuracy"] - out["0"]["last_day_accuracy"]
            out[name]["last_day_minus_unbounded_points"] = round(100 * gap, 2)
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_day, by_size) = plt.subplots(2, 1, figsize=(9, 9))
    for name, rows in result["variants"].items():
        label = f"window {int(name):,} images" if name != "0" else "every span (unbounded)"
        by_day.plot([r["day"] for r in rows], [r["accuracy"] for r in rows], label=label)
    by_day.set_xlabel("day")
    by_day.set_ylabel("gold accuracy of the day's candidate")
    rate = result.get("warm_start_learning_rate", 1e-3)  # the JSONs before the option: 0.001
    by_day.set_title(f"Window size in the warm-started daily loop ({result['days']} spans of "
                     f"{result['span_images']:,} images, warm start at {rate:g}, outside TFX)")  # fmt: skip
    by_day.legend(fontsize=8)
    sizes = sorted(
        (int(n) or result["days"] * result["span_images"], s) for n, s in result["summary"].items()
    )
    means = [s["mean_accuracy_last_days"] for _, s in sizes]
    by_size.plot([n for n, _ in sizes], means, "o-", label=f"mean of the last {LAST_DAYS} days")
    by_size.plot([n for n, _ in sizes], [s["last_day_accuracy"] for _, s in sizes], "s--", label="last day")
    by_size.set_xlabel("window size, images (unbounded: every span by the last day)")
    by_size.set_ylabel("gold accuracy")
    by_size.legend(fontsize=8)
    for ax in (by_day, by_size):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def print_table(result: dict) -> None:
    head = ("window", "last day", f"mean last {LAST_DAYS}", "vs unbounded, points", "train s, last day")
    print(" | ".join(f"{h:>20}" for h in head))
    for name, s in result["summary"].items():
        cells = (
            f"{int(name):,}" if name != "0" else "all",
            f"{s['last_day_accuracy']:.4f}",
            f"{s['mean_accuracy_last_days']:.4f}",
            f"{s.get('last_day_minus_unbounded_points', float('nan')):+.2f}",
            f"{s['last_day_train_s']:.1f}",
        )
        print(" | ".join(f"{c:>20}" for c in cells))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--windows", type=int, nargs="+", default=[5000, 10000, 20000, 0],
                        help="window sizes in images to replay (0: every span)")  # fmt: skip
    parser.add_argument("--days", type=int, default=60, help="daily spans")
    parser.add_argument("--span-images", type=int, default=1000, help="images a day")
    parser.add_argument("--gold-images", type=int, default=2000, help="the first N official test images")
    parser.add_argument(
        "--older-spans",
        type=int,
        default=0,
        help="of a bounded window's spans, this many drawn afresh each day from the older spans",
    )
    parser.add_argument(
        "--keep-served",
        type=float,
        default=0.0,
        help="a warm-started candidate's weights: this share of the served model's, the rest trained",
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="TensorFlow threads (0: its default, every core)"
    )
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "window.json"))
    add_config_flags(
        parser, TrainingConfig, WARM_START_FLAGS, "the year benchmark's warm start, changed",
        {name: getattr(YEAR_TRAINING, name) for name in WARM_START_FLAGS},
    )  # fmt: skip
    args = parser.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    config = dataclasses.replace(YEAR_TRAINING, **given(args, TrainingConfig))
    x, y = official("train")
    gold_x, gold_y = official("test")
    data = (x, y, gold_x[: args.gold_images], gold_y[: args.gold_images])
    result = {
        "command": command_line(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "days": args.days,
        "span_images": args.span_images,
        "gold_images": args.gold_images,
        "warm_start_learning_rate": config.warm_start_learning_rate,
        "warm_start_epochs": config.warm_start_epochs,
        "older_spans": args.older_spans,
        "keep_served": args.keep_served,
        "variants": {},
    }
    for window in args.windows:
        result["variants"][str(window)] = replay(window, args, data, config)
        result["summary"] = summary(result["variants"])
        Path(args.output).write_text(json.dumps(result, indent=1) + "\n")  # kept as each window ends
    plot(result, Path(args.output).with_suffix(".png"))
    print_table(result)
    print(f"figures: {args.output}")


if __name__ == "__main__":
    main()
