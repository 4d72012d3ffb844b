"""A week of data: six spans of 10,000 images arriving one per run, warm or from scratch, and two bad days.

    python benchmarks/continuous_benchmark.py --workdir workdir/bench-week

The official training split is cut into six spans (`fmnist data prepare
--spans 6`). Two sequences run side by side in time (at the same time, so both
see the same host load; each run is therefore slower than it would be alone),
each in its own workdir, with the gold test set fixed:

- warm start (the default configuration): the six days, with two bad days
  injected: after day 3 a span whose labels are shuffled (day 3's images,
  labels permuted), after day 5 a span of inverted images (day 5's images,
  255 - pixels, labels kept). Each must be refused at the right gate (the
  label gate, or else the Evaluator's overall or per-class gate; the drift
  gate) with `stable`
  unchanged;
- from scratch (`--no-warm-start`): the six good days.

Each day a span "arrives" (is copied into the workdir's data directory), then
`fmnist run` runs; when it pushed a canary, `fmnist promote` makes it stable
(the operator's check passing), so the next day is gated against it. Per run:
wall time, Trainer time, epochs, accuracy on the gold test set overall and per
class, the gate that refused it and why, and the stable and canary versions.
Writes benchmarks/results/continuous.json and continuous.png, and prints a table.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from invocation import command_line
from pipeline_benchmark import newest_report, run_measured

import core  # noqa: F401  (first: pins Keras before TensorFlow loads)

# isort: split
from core.examples import read_labelled_images
from core.spans import span_dir
from core.vocabulary import CLASS_NAMES, MODEL_NAME
from ingest.prepare import DEBIAN_DIR, prepare_dataset
from ingest.spans import write_span
from release.rollout import read_rollout

REPO = Path(__file__).resolve().parent.parent
FMNIST = str(Path(sys.executable).parent / "fmnist")
GOOD_DAYS = 6
WARM_DAYS = ["1", "2", "3", "shuffled labels", "4", "5", "inverted images", "6"]


def span_images(data_dir: Path, span: int) -> tuple[np.ndarray, np.ndarray]:
    return read_labelled_images(
        sorted(str(p) for p in Path(span_dir(str(data_dir), span)).glob("*.tfrecord.gz"))
    )


def arrive(day: str, source: Path, data_dir: Path) -> str:
    """Put the day's span into `data_dir` as its next span; return what it is."""
    if day.isdigit():
        images, labels = span_images(source, int(day))
        description = f"official training split, day {day}"
    elif day == "shuffled labels":
        images, labels = span_images(source, 3)
        labels = np.random.default_rng(0).permutation(labels)
        description = "day 3's images with their labels shuffled"
    else:
        images, labels = span_images(source, 5)
        images = 255 - images
        description = "day 5's images inverted (labels kept)"
    write_span(str(data_dir), images, labels, description)
    return description


def refused_at(report: dict) -> str:
    states = {row["component"]: row["state"] for row in report["components"]}
    if states.get("DriftGate") == "FAILED":
        return "drift gate"
    if states.get("LabelGate") == "FAILED":
        return "label gate"
    if states.get("AnomalyGate") == "FAILED":
        return "schema gate"
    if report["model"].get("blessed") is False:
        return "Evaluator (model gates)"
    if report["model"].get("serving_check_passed") is False:
        return "serving check"
    return ""


def one_day(name: str, day: str, workdir: Path, source: Path, extra: list[str], logs: Path) -> dict:
    description = arrive(day, source, workdir / "data")
    log = logs / f"{name}-day-{day.replace(' ', '-')}.log"
    measured = run_measured([FMNIST, "run", "--workdir", str(workdir), *extra], log)
    report = newest_report(workdir)
    model = report["model"]
    promoted = False
    before = read_rollout(str(workdir / "serving"), MODEL_NAME)
    if model.get("pushed") and before.canary != before.stable:
        subprocess.run([FMNIST, "promote", "--workdir", str(workdir)], check=True, capture_output=True)
        promoted = True
    rollout = read_rollout(str(workdir / "serving"), MODEL_NAME)
    components = {row["component"]: row["seconds"] for row in report["components"]}
    return {
        "day": day,
        "data": description,
        "span": report.get("span"),
        "exit_code": measured["exit_code"],
        "wall_seconds": measured["seconds"],
        "trainer_seconds": components.get("Trainer"),
        "epochs_run": log.read_text().count("/step\n"),
        "warm_started": bool(model.get("warm_started_from")),
        "accuracy": model.get("accuracy"),
        "per_class_accuracy": model.get("per_class"),
        "blessed": model.get("blessed"),
        "refused_at": refused_at(report),
        "why": model.get("not_blessed_because") or report.get("drift") or [],
        "error": report.get("error"),  # the gate's own message when it stopped the run
        "pushed_version": model.get("pushed_version") if model.get("pushed") else None,
        "promoted": promoted,
        "stable": rollout.stable,
        "canary": rollout.canary,
        "peak_rss_mb": measured["peak_rss_mb"],
    }


def sequence(name: str, days: list[str], root: Path, source: Path, extra: list[str]) -> list[dict]:
    workdir = root / name
    shutil.rmtree(workdir, ignore_errors=True)
    (workdir / "data").mkdir(parents=True)
    shutil.copytree(source / "test", workdir / "data" / "test")
    shutil.copy(source / "manifest.json", workdir / "data" / "manifest.json")
    runs = []
    for day in days:
        runs.append(one_day(name, day, workdir, source, extra, root))
        row = runs[-1]
        print(f"{name:>12} day {day:<16} {row['wall_seconds']:>7.1f} s  accuracy {row['accuracy'] or 0:.4f}  "
              f"{row['refused_at'] or 'pushed' if row['pushed_version'] else row['refused_at']}  "
              f"stable {row['stable']} canary {row['canary']}", flush=True)  # fmt: skip
    return runs


def plot(result: dict, path: Path) -> None:
    """Accuracy and wall time per day, both sequences; per-class accuracy of the warm-started candidates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (top, middle, bottom) = plt.subplots(3, 1, figsize=(9, 11), height_ratios=[1, 1, 1.3])
    for name, style in (("warm_start", "o-"), ("from_scratch", "s--")):
        good = [r for r in result[name] if r["day"].isdigit()]
        if not good:  # a week run with --no-from-scratch
            continue
        days = [int(r["day"]) for r in good]
        label = name.replace("_", " ")
        top.plot(days, [r["accuracy"] for r in good], style, label=label)
        middle.plot(days, [r["wall_seconds"] for r in good], style, label=label)
    for r in result["warm_start"]:
        if not r["day"].isdigit():
            where = (0.55, 0.06 if "inverted" in r["day"] else 0.14)
            text = f"bad day ({r['day']}): {r['refused_at'] or 'NOT refused'}"
            top.annotate(text, where, xycoords="axes fraction", fontsize=8, color="#b2182b")
    top.set_ylabel("gold test accuracy")
    top.set_title("A week of data: each day's candidate (spans of 10,000 images)")
    top.legend()
    for axis in (top, middle):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # days, not fractions of one
    middle.set_xlabel("day (span arriving)")
    middle.set_ylabel("wall time of the run (s)")
    middle.legend()
    per_class_heatmap(bottom, [r for r in result["warm_start"] if r["per_class_accuracy"]])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def per_class_heatmap(axes, runs: list[dict]) -> None:
    """Per-class gold accuracy of every warm-started candidate that was trained (refused ones included)."""
    grid = np.array([[r["per_class_accuracy"][name] for r in runs] for name in CLASS_NAMES])
    image = axes.imshow(grid, cmap="viridis", vmin=0.6, vmax=1.0, aspect="auto")
    for (row, column), value in np.ndenumerate(grid):
        axes.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=7,
                  color="white" if value < 0.8 else "black")  # fmt: skip
    axes.set_xticks(range(len(runs)), [r["day"] for r in runs], fontsize=8)
    axes.set_yticks(range(len(CLASS_NAMES)), CLASS_NAMES, fontsize=8)
    axes.set_title("warm start: per-class gold accuracy of each day's candidate", fontsize=10)
    axes.figure.colorbar(image, ax=axes, fraction=0.03)


def outcome(row: dict) -> str:
    if row["refused_at"]:
        return f"refused: {row['refused_at']}"
    return f"pushed v{row['pushed_version']}" if row["pushed_version"] else "nothing pushed"


def print_table(result: dict) -> None:
    """One table per sequence: a row per day, as the README quotes it."""
    for name in ("warm_start", "from_scratch"):
        if not result[name]:  # a week run with --no-from-scratch
            continue
        print(f"\n{name.replace('_', ' ')}")
        print(f"{'day':<17}{'wall s':>8}{'Trainer s':>10}{'epochs':>7}{'accuracy':>10}  {'outcome':<30}"
              f"{'stable':>12}{'canary':>12}")  # fmt: skip
        for row in result[name]:
            accuracy = f"{row['accuracy']:.4f}" if row["accuracy"] is not None else "-"
            trainer = f"{row['trainer_seconds']:.0f}" if row["trainer_seconds"] is not None else "-"
            versions = f"{row['stable'] or '-':>12}{row['canary'] or '-':>12}"
            print(f"{row['day']:<17}{row['wall_seconds']:>8.0f}{trainer:>10}{row['epochs_run']:>7}"
                  f"{accuracy:>10}  {outcome(row):<30}{versions}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", default="workdir/bench-week")
    parser.add_argument("--source-dir", default=str(DEBIAN_DIR), help="the official IDX files")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "continuous.json"))
    parser.add_argument(
        "--table", action="store_true", help="redraw the plot and print the table of --output; run nothing"
    )
    parser.add_argument(
        "--last-day",
        default=WARM_DAYS[-1],
        choices=WARM_DAYS,
        help="stop the week after this day (default: 6)",
    )
    parser.add_argument(
        "--from-scratch",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the from-scratch week beside the warm one (default: on)",
    )
    args = parser.parse_args()
    if args.table:
        result = json.loads(Path(args.output).read_text())
        plot(result, Path(args.output).with_suffix(".png"))
        print_table(result)
        return
    root = Path(args.workdir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    source = root / "source-data"
    prepare_dataset(Path(args.source_dir), source, spans=GOOD_DAYS)
    started = time.strftime("%Y-%m-%d %H:%M")
    warm_days = WARM_DAYS[: WARM_DAYS.index(args.last_day) + 1]
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:  # side by side: same host load
        warm = pool.submit(sequence, "warm_start", warm_days, root, source, [])
        scratch_days = [d for d in warm_days if d.isdigit()] if args.from_scratch else []
        scratch = pool.submit(sequence, "from_scratch", scratch_days, root, source, ["--no-warm-start"])
        result = {
            "command": command_line(),
            "date": started,
            "cpus": os.cpu_count(),
            "note": "the two sequences run at the same time, sharing the host's cores"
            if args.from_scratch
            else "the warm-started week alone",
            "warm_start": warm.result(),
            "from_scratch": scratch.result(),
        }
    Path(args.output).write_text(json.dumps(result, indent=2))
    plot(result, Path(args.output).with_suffix(".png"))
    print_table(result)
    print(f"figures: {args.output}")


if __name__ == "__main__":
    main()
