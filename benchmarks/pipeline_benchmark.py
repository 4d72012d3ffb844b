"""Full-data pipeline benchmark: fresh runs from TFRecords to a pushed model, then cached reruns.

    python benchmarks/pipeline_benchmark.py --workdir workdir/bench --runs 3
    python benchmarks/pipeline_benchmark.py --runs 3 --baseline="--no-flip-averaging"   # side by side

With `--baseline FLAGS`, each fresh run of the default configuration is
followed by one with FLAGS (e.g. an earlier recipe), in the same session, so
host-speed changes hit both alike; ratios compare their medians. For every
run the pushed model's single-image latency in process is measured too.

Each run gets a new pipeline root (nothing cached) and uses the TFRecords in
`--data-dir` (default `workdir/data`, written by `fmnist data prepare`). The
pipeline runs as a subprocess (`fmnist run`), sampled with psutil for the peak
RSS of its whole process tree (Beam workers included). Then the same command
runs again to time a fully cached rerun. Figures come from each run's own
report (MLMD wall times, TFMA accuracy). Writes one JSON and prints a table
with the median over runs.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
from importlib import metadata
from pathlib import Path

import psutil
from invocation import command_line

from pipeline.nodes import ALWAYS_RUN

REPO = Path(__file__).resolve().parent.parent
VERSIONED_PACKAGES = (
    "tfx",
    "tensorflow",
    "tensorflow-transform",
    "tensorflow-data-validation",
    "tensorflow-model-analysis",
)


def tree_rss(process: psutil.Process) -> int:
    total = 0
    for p in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):  # a worker may exit between listing and reading
            total += p.memory_info().rss
    return total


def run_measured(command: list[str], log_path: Path) -> dict:
    """Run `command`, return wall seconds, exit code and the peak RSS of its process tree."""
    peak = 0
    with open(log_path, "w") as log:
        started = time.monotonic()
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        handle = psutil.Process(proc.pid)
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                with contextlib.suppress(psutil.Error):
                    peak = max(peak, tree_rss(handle))
                done.wait(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = proc.wait()
        done.set()
        sampler.join()
    return {
        "seconds": round(time.monotonic() - started, 1),
        "exit_code": code,
        "peak_rss_mb": round(peak / 2**20),
    }


def newest_report(workdir: Path) -> dict:
    reports = sorted(glob.glob(str(workdir / "pipeline" / "reports" / "*.json")), key=os.path.getmtime)
    return json.loads(Path(reports[-1]).read_text())


def serving_latency_ms(model_dir: str, requests: int = 1000) -> float:
    """p50 of single-image `predict_images` calls on the pushed model, in a fresh process."""
    code = (
        "import sys, time, numpy as np, core, tensorflow as tf\n"
        "f = tf.saved_model.load(sys.argv[1]).signatures['predict_images']\n"
        "x = [tf.constant(np.random.default_rng(i).integers(0, 256, (1, 28, 28), dtype=np.uint8))"
        " for i in range(100)]\n"
        "[f(images=x[i % 100]) for i in range(100)]\n"
        "t = []\n"
        f"for i in range({requests}):\n"
        "    s = time.perf_counter(); f(images=x[i % 100]); t.append(time.perf_counter() - s)\n"
        "print(sorted(t)[len(t) // 2] * 1000)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, model_dir], capture_output=True, text=True, check=True, cwd=REPO
    )
    return round(float(done.stdout.strip().splitlines()[-1]), 3)


def one_run(index: int, args: argparse.Namespace, name: str = "run", flags: list[str] | None = None) -> dict:
    workdir = Path(args.workdir) / f"{name}-{index}"
    shutil.rmtree(workdir, ignore_errors=True)
    command = [str(Path(sys.executable).parent / "fmnist"), "run", "--workdir", str(workdir),
               "--data-dir", args.data_dir, *(args.extra if flags is None else flags)]  # fmt: skip
    log = Path(args.workdir) / f"{name}-{index}.log"
    fresh = run_measured(command, log)
    if fresh["exit_code"] != 0:
        raise SystemExit(f"{name} {index} failed; see {log}")
    report = newest_report(workdir)
    cached = run_measured(command, Path(args.workdir) / f"{name}-{index}-cached.log")
    cached_report = newest_report(workdir)
    components = {row["component"]: row["seconds"] for row in report["components"]}
    trainer_log = log.read_text()
    model = report["model"]
    return {
        "wall_seconds": fresh["seconds"],
        "component_seconds": components,
        "non_trainer_seconds": round(sum(v for k, v in components.items() if k != "Trainer"), 1),
        "trainer_seconds": components.get("Trainer"),
        "epochs_run": trainer_log.count("/step\n"),
        "accuracy": report["model"].get("accuracy"),
        "per_class_accuracy": model.get("per_class"),
        "per_class_precision_recall": model.get("per_class_binary"),
        "expected_calibration_error": model.get("expected_calibration_error"),
        "calibration_buckets": model.get("calibration"),
        "blessed": model.get("blessed"),
        "pushed_version": model.get("pushed_version"),
        "serving_p50_ms": serving_latency_ms(model["pushed_path"]) if model.get("pushed_path") else None,
        "peak_rss_mb": fresh["peak_rss_mb"],
        "cached_rerun_seconds": cached["seconds"],
        "cached_rerun_all_cached": all(
            row["state"] == "CACHED"
            for row in cached_report["components"]
            if row["component"] not in ALWAYS_RUN  # the planner looks at the data directory afresh every run
        ),
    }


def summarize(runs: list[dict]) -> dict:
    keys = [
        "wall_seconds",
        "trainer_seconds",
        "non_trainer_seconds",
        "accuracy",
        "peak_rss_mb",
        "cached_rerun_seconds",
        "expected_calibration_error",
        "serving_p50_ms",
    ]
    return {k: statistics.median(r[k] for r in runs if r[k] is not None) for k in keys}


def print_table(result: dict, runs_key: str = "runs", median_key: str = "median") -> None:
    runs, median = result[runs_key], result[median_key]
    names = list(runs[0]["component_seconds"])
    print(f"{'':<26}" + "".join(f"{'run ' + str(i + 1):>10}" for i in range(len(runs))) + f"{'median':>10}")
    for name in names:
        values = [r["component_seconds"].get(name, 0.0) for r in runs]
        print(f"{name:<26}" + "".join(f"{v:>10.1f}" for v in values) + f"{statistics.median(values):>10.1f}")
    rows = [("wall (s)", "wall_seconds", "{:.1f}"), ("outside Trainer (s)", "non_trainer_seconds", "{:.1f}"),
            ("test accuracy", "accuracy", "{:.4f}"), ("peak RSS, tree (MB)", "peak_rss_mb", "{:.0f}"),
            ("cached rerun (s)", "cached_rerun_seconds", "{:.1f}"),
            ("calibration error", "expected_calibration_error", "{:.4f}"),
            ("serving p50 (ms)", "serving_p50_ms", "{:.3f}")]  # fmt: skip
    for label, key, fmt in rows:
        print(
            f"{label:<26}"
            + "".join(f"{fmt.format(r[key]):>10}" for r in runs)
            + f"{fmt.format(median[key]):>10}"
        )
    print(f"epochs run: {[r['epochs_run'] for r in runs]}; all cached on rerun: "
          f"{[r['cached_rerun_all_cached'] for r in runs]}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", default="workdir/bench")
    parser.add_argument("--data-dir", default="workdir/data")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "pipeline.json"))
    parser.add_argument(
        "--baseline", help="`fmnist run` flags of a second recipe, run after each default run (side by side)"
    )
    parser.add_argument("extra", nargs="*", help="flags passed on to `fmnist run` (after --)")
    args = parser.parse_args()
    args.data_dir = str(Path(args.data_dir).resolve())
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    runs, baseline_runs = [], []
    for i in range(args.runs):
        runs.append(one_run(i + 1, args))
        if args.baseline:
            baseline_runs.append(one_run(i + 1, args, "baseline", shlex.split(args.baseline)))
    result = {
        "command": command_line(),
        "date": time.strftime("%Y-%m-%d"),
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "versions": {p: metadata.version(p) for p in VERSIONED_PACKAGES},
        "runs": runs,
        "median": summarize(runs),
    }  # fmt: skip
    if baseline_runs:
        result.update(
            baseline_flags=args.baseline,
            baseline_runs=baseline_runs,
            baseline_median=summarize(baseline_runs),
        )
        median, base = result["median"], result["baseline_median"]
        result["ratios_to_baseline"] = {
            k: round(median[k] / base[k], 3) for k in ("wall_seconds", "trainer_seconds", "serving_p50_ms")
        }
        result["accuracy_gain"] = round(median["accuracy"] - base["accuracy"], 4)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2))
    print_table(result)
    if baseline_runs:
        print(f"\nbaseline ({args.baseline}):")
        print_table(result, "baseline_runs", "baseline_median")
        ratios, gain = result["ratios_to_baseline"], result["accuracy_gain"]
        print(f"\nratios to the baseline: {ratios}; accuracy gain {gain}")
    print(f"figures: {args.output}")


if __name__ == "__main__":
    main()
