"""A year of data, compressed: one span a day for 60 days, with the default retention and a bounded window,
against the same days with no retention and an unbounded window, side by side.

    python benchmarks/year_benchmark.py --workdir workdir/bench-year

Each day a span of `--span-images` official training images arrives (day d
takes the d-th slice; 60 days of 1,000 images use the training split once, and
later days take slices of a shuffled copy: `day_images`), `fmnist run` runs (a
small CNN, gold accuracy on the first `--gold-images` official test images),
and a pushed canary is promoted at once, so the next day is gated against it
and warm-starts from it. Two variants run side by side, one process and one
core each, in step day by day (both see the host's drift and each other alike):

- `bounded`: the default retention policy, with its seven days of history
  kept as seven runs (the benchmark's days take a minute, not a day:
  `--keep-runs 7 --keep-days 0`), and the training window bounded at
  `--window-images` (10 spans by default; the pipeline's default, 60,000
  images, is 60 of these days), trained six warm-start epochs a day instead
  of two: what the window saves, spent on epochs (`year_flags.py` says why);
- `unbounded`: no retention, every span in the window, two epochs (the
  behaviour before issue #22: `--no-apply-retention --window-images 0`).

`--snapshot-after 10 60` keeps a copy of the bounded workdir after those
days, with the next span written, for `year_replay.sh`: the history's cost
timed side by side, apart from the host's drift over hours.

`--resume --only bounded --baseline EARLIER.json` goes on with the bounded
variant alone and takes the unbounded days it leaves out from an earlier run
of the same flags (checked day by day): the unbounded days are deterministic,
and past day 15 they cost more than the bounded ones.

Per day it records wall, Trainer and Transform seconds, the CPU seconds of the
run's processes (steadier than wall on a shared host), the bytes under the
pipeline root (hard links counted once, as `du` counts them) and the serving
directory, the ML Metadata file's size and row counts, the training window,
and the gold accuracy of the day's candidate. Writes
benchmarks/results/year.json and year.png and prints a table; `--table`
prints it again from the JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import queue
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import NoReturn

import numpy as np
from invocation import command_line
from pipeline_benchmark import newest_report, run_measured
from year_flags import BOUNDED, RUN_FLAGS, UNBOUNDED, WINDOW_IMAGES, variant_flags

import core  # noqa: F401  (first: pins Keras before TensorFlow loads)

# isort: split
from core.vocabulary import MODEL_NAME
from ingest.prepare import DEBIAN_DIR, OFFICIAL_FILES, parse_split, prepare_dataset, read_split
from ingest.spans import span_dir, write_span
from release.rollout import read_rollout

REPO = Path(__file__).resolve().parent.parent
FMNIST = str(Path(sys.executable).parent / "fmnist")
MLMD_TABLES = ("Artifact", "Execution", "Event", "Context")
WORKER_CHECK_SECONDS = 30  # how often the main process looks for a dead worker while it waits


def disk_bytes(root: Path) -> int:
    """Bytes of the files under `root`, each inode once (a hard-linked window costs nothing more)."""
    seen, total = set(), 0
    for directory, _, names in os.walk(root):
        for name in names:
            stat = os.lstat(os.path.join(directory, name))
            if (stat.st_dev, stat.st_ino) not in seen:
                seen.add((stat.st_dev, stat.st_ino))
                total += stat.st_size
    return total


def mlmd_rows(path: Path) -> dict[str, int]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return {table: db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] for table in MLMD_TABLES}


def one_day(day: int, workdir: Path, images, labels, flags: list[str], logs: Path) -> dict:
    span_images = len(images)
    if not os.path.exists(span_dir(str(workdir / "data"), day)):  # a resumed day's span may be written
        write_span(str(workdir / "data"), images, labels, f"official training images, day {day}", span=day)
    log = logs / f"{workdir.name}-day-{day:03d}.log"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    measured = run_measured([FMNIST, "run", "--workdir", str(workdir), *RUN_FLAGS, *flags], log)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    report = newest_report(workdir)
    model = report["model"]
    before = read_rollout(str(workdir / "serving"), MODEL_NAME)
    if model.get("pushed") and before.canary != before.stable:
        subprocess.run([FMNIST, "promote", "--workdir", str(workdir)], check=True, capture_output=True)
    seconds = {row["component"]: row["seconds"] for row in report["components"]}
    metadata = workdir / "pipeline" / "metadata.sqlite"
    return {
        "day": day,
        "span_images": span_images,
        "exit_code": measured["exit_code"],
        "wall_s": measured["seconds"],
        "cpu_s": round(cpu, 1),
        "trainer_s": seconds.get("Trainer"),
        "transform_s": seconds.get("Transform"),
        "window_spans": report.get("training_window") or [],
        "pipeline_root_bytes": disk_bytes(workdir / "pipeline"),
        "serving_bytes": disk_bytes(workdir / "serving"),
        "mlmd_bytes": metadata.stat().st_size,
        "mlmd_rows": mlmd_rows(metadata),
        "accuracy": model.get("accuracy"),
        "pushed": bool(model.get("pushed")),
        "error": (report.get("error") or "").split("\n")[0] or None,
        "retention": report.get("retention"),
        "peak_rss_mb": measured["peak_rss_mb"],
    }


def setup_variant(root: Path, name: str, gold: Path) -> Path:
    workdir = root / name
    shutil.rmtree(workdir, ignore_errors=True)
    (workdir / "data").mkdir(parents=True)
    shutil.copytree(gold / "test", workdir / "data" / "test")
    shutil.copy(gold / "manifest.json", workdir / "data" / "manifest.json")
    return workdir


def progress(name: str, row: dict) -> None:
    print(
        f"{name:>9} day {row['day']:>3} {row['wall_s']:>6.1f} s (cpu {row['cpu_s']:>6.1f})  window "
        f"{len(row['window_spans']):>2} spans  root {row['pipeline_root_bytes'] / 2**20:7.1f} MB  "
        f"accuracy {row['accuracy'] or 0:.4f}{'  ' + row['error'] if row['error'] else ''}",
        file=sys.stderr,
        flush=True,
    )


def days_of(result: dict, variant: str) -> list[dict]:
    """One variant's rows, a day each, in the issue's shape: `result[variant]["days"]`."""
    return result[variant]["days"]


def total_bytes(row: dict) -> int:
    return row["pipeline_root_bytes"] + row["serving_bytes"] + row["mlmd_bytes"]


def ratios(rows: list[dict], key, late: int, early: int) -> dict:
    """`key` on day `late` over day `early` (1-based), and the same of the medians of the 5 days to each."""

    def median(day: int) -> float:
        values = sorted(key(r) for r in rows[max(0, day - 5) : day])
        return values[len(values) // 2]

    return {
        "day": round(key(rows[late - 1]) / key(rows[early - 1]), 3),
        "median_of_5_days": round(median(late) / median(early), 3),
    }


def summary(result: dict) -> dict:
    """The issue's targets, as measured: wall and bytes flat, accuracy close to the unbounded window's."""
    bounded, unbounded = days_of(result, BOUNDED), days_of(result, UNBOUNDED)
    last = len(bounded)
    early, twentieth = min(10, last), min(20, last)
    found: dict = {}
    for name, rows in ((BOUNDED, bounded), (UNBOUNDED, unbounded)):
        found[name] = {
            f"wall_day_{last}_over_day_{early}": ratios(rows, lambda r: r["wall_s"], last, early),
            f"cpu_day_{last}_over_day_{early}": ratios(rows, lambda r: r["cpu_s"], last, early),
            f"bytes_day_{last}_over_day_{twentieth}": ratios(rows, total_bytes, last, twentieth),
        }
    found["accuracy_last_day_bounded_minus_unbounded"] = round(
        bounded[-1]["accuracy"] - unbounded[-1]["accuracy"], 4
    )
    return found


def off_scale(ax, points: list[tuple[int, float]]) -> None:
    """Keep a day that stalled (a paused or swapped-out run) from flattening every other day:
    the axis stops at 1.25x the 95th percentile and says what it left out."""
    values = sorted(v for _, v in points)
    top = 1.25 * values[int(0.95 * (len(values) - 1))]
    left_out: dict[int, list[str]] = {}
    for day, v in sorted(points):
        if v > top:
            left_out.setdefault(day, []).append(f"{v:.0f}")
    if left_out:
        ax.set_ylim(0, top)
        said = "; ".join(f"day {day}: {', '.join(seconds)} s" for day, seconds in left_out.items())
        ax.text(
            0.01, 0.97, f"off the scale: {said}",
            transform=ax.transAxes, fontsize=8, va="top", bbox={"facecolor": "white", "alpha": 0.8},
        )  # fmt: skip


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 1, figsize=(9, 13), sharex=True)
    for name, style in ((BOUNDED, "-"), (UNBOUNDED, "--")):
        rows = days_of(result, name)
        days = [r["day"] for r in rows]
        axes[0].plot(days, [r["wall_s"] for r in rows], style, label=f"{name}: whole run")
        axes[0].plot(days, [r["trainer_s"] or 0 for r in rows], style, alpha=0.6, label=f"{name}: Trainer")
        axes[1].plot(
            days, [r["pipeline_root_bytes"] / 2**20 for r in rows], style, label=f"{name}: pipeline root"
        )
        axes[1].plot(
            days, [r["serving_bytes"] / 2**20 for r in rows], style, alpha=0.6, label=f"{name}: serving"
        )
        axes[2].plot(days, [r["mlmd_bytes"] / 2**20 for r in rows], style, label=f"{name}: ML Metadata")
        axes[3].plot(days, [r["accuracy"] for r in rows], style, label=name)
    walls = [(r["day"], r["wall_s"]) for name in (BOUNDED, UNBOUNDED) for r in days_of(result, name)]
    off_scale(axes[0], walls)
    axes[0].set_ylabel("seconds")
    axes[0].set_title(f"A year of data, compressed: {len(days_of(result, 'bounded'))} daily spans")
    axes[1].set_ylabel("MB on disk")
    axes[2].set_ylabel("MB")
    axes[3].set_ylabel("gold accuracy of the day's candidate")
    axes[3].set_xlabel("day")
    for ax in axes:
        for resumed in result.get("resumed", []):  # another session: the host may differ from here on
            ax.axvline(resumed["day"] - 0.5, color="grey", linestyle=":", label=f"resumed {resumed['date']}")
        for name in (BOUNDED, UNBOUNDED):  # days another run measured (`--baseline`)
            if taken := result[name].get("days_from"):
                ax.axvline(
                    taken["days"][0] - 0.5, color="black", linestyle="-.",
                    label=f"{name} from here: the run of {taken['date']}",
                )  # fmt: skip
        ax.legend(fontsize=8, loc="upper right" if ax is axes[0] else "best")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def print_table(result: dict, every: int = 5) -> None:
    """Every `every`-th day (and the first and last): the bounded variant, then the unbounded one."""
    head = ("day", "wall s", "Trainer s", "Transform s", "root MB", "serving MB", "MLMD MB", "accuracy")
    print(" | ".join(f"{h:>11}" for h in head) + " || unbounded: " + " | ".join(f"{h:>9}" for h in head[1:5]))
    bounded = days_of(result, BOUNDED)
    for b, u in zip(bounded, days_of(result, UNBOUNDED), strict=True):
        if b["day"] % every and b["day"] not in (1, len(bounded)):
            continue
        cells = [
            b["day"], b["wall_s"], b["trainer_s"] or 0, b["transform_s"] or 0,
            b["pipeline_root_bytes"] / 2**20,
            b["serving_bytes"] / 2**20, b["mlmd_bytes"] / 2**20, b["accuracy"] or 0,
        ]  # fmt: skip
        theirs = [u["wall_s"], u["trainer_s"] or 0, u["transform_s"] or 0, u["pipeline_root_bytes"] / 2**20]
        print(" | ".join(f"{c:>11.4g}" for c in cells) + " || " + " | ".join(f"{c:>9.4g}" for c in theirs))
    print(json.dumps(result["summary"], indent=2))


def day_images(day: int, span_images: int, total: int) -> np.ndarray:
    """Day `day`'s indices into the training split: its d-th slice, and past its end, slices of a
    shuffled copy (one shuffle per further pass), so that no day repeats an earlier day's examples
    (`write_span` refuses a duplicate span, and a snapshot's day 61 must be a new day)."""
    passes, start = divmod((day - 1) * span_images, total)
    order = np.random.default_rng(passes).permutation(total) if passes else np.arange(total)
    return order[start : start + span_images]


def run_variant(name: str, extra: list[str], workdir: Path, args, first: int, barrier, days) -> None:
    """One variant's days, in its own process so that its CPU seconds are its own.

    The two variants run side by side, one core each, in step day by day (the
    barrier): both see the same host and the same neighbour on every day.
    Its own process group holds its `fmnist run`, so that `stop_workers`
    stops the day under way with it.
    """
    os.setpgid(0, 0)
    train = read_split(Path(args.source_dir), OFFICIAL_FILES["train"])
    images, labels = parse_split(train, "train", OFFICIAL_FILES["train"])

    def span(day: int) -> tuple:
        taken = day_images(day, args.span_images, len(images))
        return images[taken], labels[taken]

    for day in range(first, args.days + 1):
        days.put((name, one_day(day, workdir, *span(day), extra, workdir.parent)))
        if name == BOUNDED and day in args.snapshot_after:
            snapshot(workdir, day, *span(day + 1))
        barrier.wait()


def snapshot(workdir: Path, day: int, images, labels) -> Path:
    """A copy of `workdir` after `day`, with the next day's span written into its data directory:
    what `benchmarks/year_replay.sh` runs one more day from, so that two days of the history can
    be timed side by side. `cp -a` keeps the hard links (a window's files count once)."""
    saved = workdir.parent / "snapshots" / f"{workdir.name}-after-{day:03d}"
    shutil.rmtree(saved, ignore_errors=True)
    saved.parent.mkdir(exist_ok=True)
    subprocess.run(["cp", "-a", str(workdir), str(saved)], check=True)
    write_span(str(saved / "data"), images, labels, f"official training images, day {day + 1}", span=day + 1)
    return saved


def next_day(days, workers: list) -> tuple[str, dict]:
    """The next (variant, day) a worker finished; a worker that died instead stops the benchmark."""
    while True:
        try:
            return days.get(timeout=WORKER_CHECK_SECONDS)
        except queue.Empty:
            dead = [w.name for w in workers if not w.is_alive() and w.exitcode != 0]
            if dead:
                raise SystemExit(
                    f"year benchmark: worker {', '.join(dead)} died; the days so far are saved"
                ) from None


def stop_workers(workers: list) -> None:
    """Stop each live worker's process group: the worker and the `fmnist run` it waits for. A kill
    of the benchmark alone would leave them running their days into the workdirs (found
    2026-12-03: a killed benchmark's workers ran on beside the next one)."""
    for worker in workers:
        if worker.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGTERM)


def save(result: dict, path: Path, days_done: int) -> None:
    """Write the figures so far, atomically: the JSON always holds whole days."""
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps({**result, "days_done": days_done}, indent=2))
    partial.replace(path)


def fresh_result(args, started: str, flags: dict) -> dict:
    return {
        "command": command_line(),
        "date": started,
        "cpus": os.cpu_count(),
        "span_images": args.span_images,
        "gold_images": args.gold_images,
        "run_flags": RUN_FLAGS,
        **{name: {"flags": extra, "days": []} for name, extra in flags.items()},
    }


def resumed(path: Path, started: str) -> tuple[dict, int]:
    """The saved days and the first day to run: a run killed part-way goes on where it stopped.

    The killed day is run again from the start on the variants' workdirs as the
    kill left them, which is itself the case retention and the runner must
    survive; the JSON records where and when the run was resumed.
    """
    result = json.loads(path.read_text())
    first = result.pop("days_done") + 1
    result.pop("summary", None)
    result.setdefault("resumed", []).append({"day": first, "date": started, "command": command_line()})
    return result, first


def refuse(message: str) -> NoReturn:
    """Bad input (an earlier run that is not this one's): said on stderr, exit code 2."""
    print(f"year benchmark: {message}", file=sys.stderr)
    raise SystemExit(2)


def fill_from(result: dict, path: Path) -> None:
    """The days a variant did not run this time, taken from an earlier run of the same flags.

    For the unbounded baseline when only the bounded variant changed (`--only bounded`): its
    days cost hours and are deterministic (the same gold accuracy to four decimals, day by day,
    across sessions), so an earlier run's are its days. Checked, not assumed: the flags must be
    the same and so must every day both runs ran; the JSON says which days came from where.
    """
    earlier = json.loads(path.read_text())
    last = max(len(days_of(result, name)) for name in (BOUNDED, UNBOUNDED))
    for name in (BOUNDED, UNBOUNDED):
        ours, theirs = days_of(result, name), days_of(earlier, name)
        if len(ours) == last:
            continue
        if (earlier["run_flags"], earlier[name]["flags"]) != (result["run_flags"], result[name]["flags"]):
            refuse(f"{path} ran {name} with other flags; its days are not these")
        if len(theirs) < last:
            refuse(f"{path} ran {name} {len(theirs)} days, not {last}")
        pairs = zip(ours, theirs[: len(ours)], strict=True)
        differ = [r["day"] for r, t in pairs if round(r["accuracy"], 4) != round(t["accuracy"], 4)]
        if differ:
            refuse(f"{path}'s {name} differs from this run on days {differ[:5]}")
        result[name]["days_from"] = {
            "file": str(path), "date": earlier["date"], "command": earlier["command"],
            "days": [len(ours) + 1, last], "same_accuracy_days": [1, len(ours)],
        }  # fmt: skip
        ours.extend(theirs[len(ours) : last])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", default="workdir/bench-year")
    parser.add_argument("--source-dir", default=str(DEBIAN_DIR), help="the official IDX files")
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--span-images", type=int, default=1000)
    parser.add_argument("--gold-images", type=int, default=2000, help="the gold set: the first N test images")
    parser.add_argument(
        "--window-images", type=int, default=WINDOW_IMAGES, help="the bounded variant's window"
    )
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "year.json"))
    parser.add_argument(
        "--resume",
        action="store_true",
        help="go on from the last whole day in --output, with the variants' workdirs as they are",
    )
    parser.add_argument(
        "--table", action="store_true", help="print the table and redraw the plot of --output"
    )
    parser.add_argument(
        "--only",
        nargs=1,
        choices=(BOUNDED, UNBOUNDED),
        help="run this variant alone; the other keeps the days --output holds (with --resume)",
    )
    parser.add_argument(
        "--snapshot-after",
        type=int,
        nargs="*",
        default=[],
        help="after these days, copy the bounded workdir with the next span written (year_replay.sh)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="an earlier year.json of the same flags: the days of the variant --only left out come from it",
    )
    args = parser.parse_args()
    if args.only and not args.resume:
        parser.error("--only goes with --resume: the other variant's days come from --output or --baseline")
    if args.table:
        result = json.loads(Path(args.output).read_text())
        if args.baseline:
            fill_from(result, args.baseline)
        result["summary"] = summary(result)  # a partial run's figures are summarised as far as they go
        plot(result, Path(args.output).with_suffix(".png"))
        print_table(result)
        return
    root = Path(args.workdir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M")
    flags = {name: variant_flags(name, args.window_images) for name in args.only or (BOUNDED, UNBOUNDED)}
    if args.resume:
        result, first = resumed(Path(args.output), started)
        workdirs = {name: root / name for name in flags}
    else:
        gold = root / "gold"
        prepare_dataset(Path(args.source_dir), gold, limit=args.gold_images)  # its test split: the gold set
        workdirs = {name: setup_variant(root, name, gold) for name in flags}
        result, first = fresh_result(args, started, flags), 1
    spawn = multiprocessing.get_context("spawn")  # the workers write spans with TensorFlow: no fork
    days, barrier = spawn.Queue(), spawn.Barrier(len(flags))
    workers = [
        spawn.Process(
            target=run_variant, name=name, args=(name, extra, workdirs[name], args, first, barrier, days)
        )
        for name, extra in flags.items()
    ]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))  # runs the finally below
    for worker in workers:
        worker.start()
    try:
        for day in range(first, args.days + 1):
            for _ in flags:
                name, row = next_day(days, workers)
                days_of(result, name).append(row)
                progress(name, row)
            save(result, Path(args.output), days_done=day)  # a long run killed part-way keeps its days
        for worker in workers:
            worker.join()
    finally:
        stop_workers(workers)
    if args.baseline:
        fill_from(result, args.baseline)
    result["summary"] = summary(result)
    save(result, Path(args.output), days_done=args.days)
    plot(result, Path(args.output).with_suffix(".png"))
    print_table(result)
    print(f"figures: {args.output}")
    if failed := [worker.name for worker in workers if worker.exitcode]:  # after the last day: a snapshot
        raise SystemExit(f"year benchmark: worker {', '.join(failed)} failed after its last day (see above)")


if __name__ == "__main__":
    main()
