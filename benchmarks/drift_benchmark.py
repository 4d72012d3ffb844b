"""Drift report benchmark: does it flag known shifts, stay quiet on clean samples, and run fast?

    python benchmarks/drift_benchmark.py --workdir workdir

Needs a pipeline run that pushed a model (`make run`): the reference is the
served version's training data, found through MLMD lineage, as `fmnist drift`
finds it. Batches come from the official test set (never trained on):

- each shift of `monitoring/shifts.py` applied to 1,000 test images;
- clean random samples of 200 to 10,000 test images, several seeds each
  (a flag there is a false alarm);
- the time of `fmnist drift` on all 10,000 test images, end to end in a fresh
  process, with the reference cache cold (first report for a version) and warm.

Writes benchmarks/results/drift.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from invocation import command_line

from core import idx
from core.config import DriftConfig, PipelineConfig
from ingest.prepare import DEBIAN_DIR
from monitoring.batches import Batch
from monitoring.drift import check_drift
from monitoring.reference import served_model_reference
from monitoring.shifts import SHIFTS

REPO = Path(__file__).resolve().parent.parent
CLEAN_SIZES = {200: 10, 500: 10, 1000: 10, 2000: 5, 5000: 3, 10000: 1}
SHIFT_SIZE = 1000


def official_test_set(source: Path) -> tuple[np.ndarray, np.ndarray]:
    import gzip

    images = idx.parse_images(
        gzip.decompress((source / "t10k-images-idx3-ubyte.gz").read_bytes()), "test images"
    )
    labels = idx.parse_labels(
        gzip.decompress((source / "t10k-labels-idx1-ubyte.gz").read_bytes()), "test labels"
    )
    return images, labels


def timed_cli(workdir: str, batch_file: str, output: str) -> tuple[float, int]:
    command = [
        str(Path(sys.executable).parent / "fmnist"),
        "drift",
        batch_file,
        "--workdir",
        workdir,
        "--output",
        output,
    ]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True)  # same cwd: artifact URIs may be relative
    return round(time.monotonic() - started, 1), done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", default="workdir")
    parser.add_argument("--source-dir", default=str(DEBIAN_DIR), help="the official IDX files")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "drift.json"))
    args = parser.parse_args()

    config, drift = PipelineConfig(workdir=args.workdir), DriftConfig()
    images, labels = official_test_set(Path(args.source_dir))
    reference, predict, lineage = served_model_reference(config, drift, None, True, print)
    rng = np.random.default_rng(1)

    shifted = []
    subset = rng.choice(len(images), SHIFT_SIZE, replace=False)
    for name, shift in SHIFTS.items():
        batch, _ = shift(images[subset], labels[subset])
        result = check_drift(Batch(batch, name), reference, drift, predict)
        top = result.features[0]
        shifted.append({
            "shift": name, "images": len(batch), "flagged": result.drifted,
            "drifted_features": len(result.drifted_features),
            "top_feature": top.feature, "top_distance": top.distance, "top_threshold": top.threshold,
        })  # fmt: skip
        print(f"{name:<40} flagged={result.drifted} top={top.feature} {top.distance:.3f}/{top.threshold:.3f}")

    clean = []
    for size, seeds in CLEAN_SIZES.items():
        ratios, alarms = [], 0
        for _ in range(seeds):
            sample = images[rng.choice(len(images), size, replace=False)]
            result = check_drift(Batch(sample, f"clean {size}"), reference, drift, predict)
            alarms += result.drifted
            ratios.append(max(f.distance / f.threshold for f in result.features))
        clean.append(
            {
                "images": size,
                "samples": seeds,
                "false_alarms": alarms,
                "max_distance_over_threshold": round(max(ratios), 3),
            }
        )
        print(f"clean {size:>6} x{seeds:<3} false alarms={alarms} max distance/threshold={max(ratios):.3f}")

    cache = Path(config.pipeline_root) / "drift_reference"
    shutil.rmtree(cache, ignore_errors=True)
    test_file = str(Path(args.source_dir) / "t10k-images-idx3-ubyte.gz")
    out = Path(config.workdir) / "drift" / "benchmark"
    cold, cold_code = timed_cli(args.workdir, test_file, str(out))
    warm, warm_code = timed_cli(args.workdir, test_file, str(out))

    result = {
        "command": command_line(),
        "date": time.strftime("%Y-%m-%d"),
        "cores": os.cpu_count(),
        "served_version": lineage.version,
        "reference": reference.description,
        "config": drift.__dict__,
        "shifts": shifted,
        "shifts_flagged": f"{sum(s['flagged'] for s in shifted)}/{len(shifted)}",
        "clean_samples": clean,
        "false_alarms_at_200_or_more": sum(c["false_alarms"] for c in clean),
        "report_10000_images_seconds": {
            "cold_cache": cold,
            "warm_cache": warm,
            "exit_codes": [cold_code, warm_code],
        },
    }
    Path(args.output).write_text(json.dumps(result, indent=2))
    print(f"\nshifts flagged: {result['shifts_flagged']}; false alarms on clean samples: "
          f"{result['false_alarms_at_200_or_more']}; 10,000-image report: {cold} s cold, {warm} s warm "
          f"(exit codes {cold_code}, {warm_code})\nwritten: {args.output}")  # fmt: skip


if __name__ == "__main__":
    main()
