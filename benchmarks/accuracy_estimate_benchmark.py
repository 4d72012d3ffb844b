"""Label-free accuracy estimate against the truth, on shifted copies of the official test set.

    python benchmarks/accuracy_estimate_benchmark.py --workdir workdir
    python benchmarks/accuracy_estimate_benchmark.py --model-dir workdir/serving/fashion_mnist/<version> \\
        --eval-dir workdir/pipeline/SpanExampleGen/examples/<id>/Split-eval

The estimator (`core/accuracy_estimate.py`) is fitted as the Trainer would fit
it: on the held-out `eval` split of the model's own training run (never
trained on, never the test set), through the model's `predict_images`
signature, with its fit-time synthetic shifts (`core/synthetic_shifts.py`).
With `--workdir`, the model is the served (stable) version and the eval splits
those of its training window, found through ML Metadata lineage.

It is then checked on the official test images, clean and under each shift of
`monitoring.shifts.SHIFT_FAMILIES` (kinds the estimator never saw at fit time)
at each strength: per case the true accuracy, the estimate and its 90 %
interval and the reading it took (COT, or a change of class mix), and for
comparison plain mean confidence (the baseline), difference of confidences
(DoC), Average Thresholded Confidence on negative entropy (ATC-NE, the method
before COT) and on the top probability (ATC-MC), and the class-mix ceiling;
per predicted class the same for DoC (chosen), mean confidence and ATC with
per-class thresholds. Summary: mean absolute error of each method,
coverage and width of the interval (and of the chance-only interval, to show
why it is widened), the worst cases.

Writes benchmarks/results/accuracy_estimate.json and accuracy_estimate.png,
and prints a table; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from drift_benchmark import official_test_set
from invocation import command_line

import core  # noqa: F401  (first: pins Keras before TensorFlow loads)

# isort: split
from components.trainer import fit_sample
from core import accuracy_estimate as ae
from core.config import PipelineConfig, TrainingConfig
from core.examples import read_labelled_images, split_files
from core.synthetic_shifts import FIT_SHIFTS
from core.vocabulary import CLASS_NAMES, NUM_CLASSES
from ingest.prepare import DEBIAN_DIR
from monitoring.drift import model_predictor
from monitoring.shifts import SHIFT_FAMILIES

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
EVAL_SPLIT = "Split-eval"
CLEAN = "none"
WORST_SHOWN = 5
ATC_SCORES = {"atc_ne": ae.SCORE_NEGATIVE_ENTROPY, "atc_mc": ae.SCORE_MAX_CONFIDENCE}  # the comparisons


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def served_model_and_eval_dirs(workdir: str) -> tuple[str, list[str], int]:
    """The stable version's model directory, the eval splits of its training window, and its version."""
    from pipeline.lineage import lineage_of

    chain = lineage_of(PipelineConfig(workdir=workdir))
    return (
        chain.pushed_destination,
        [os.path.join(s.examples_uri, EVAL_SPLIT) for s in chain.spans],
        chain.version,
    )


def held_out(eval_dirs: list[str]) -> tuple[np.ndarray, np.ndarray]:
    files = [f for d in eval_dirs for f in split_files(d)]
    return read_labelled_images(files)


def class_thresholds(p: np.ndarray, labels: np.ndarray) -> list[float | None]:
    """ATC thresholds of each predicted class on held-out answers: the per-class alternative."""
    scores, predicted = ae.confidence_scores(p, ae.SCORE_NEGATIVE_ENTROPY), p.argmax(axis=1)
    return [
        ae.atc_threshold(scores[predicted == k], predicted[predicted == k] == labels[predicted == k])
        if np.sum(predicted == k) >= ae.MIN_CLASS_EXAMPLES
        else None
        for k in range(NUM_CLASSES)
    ]


class Comparisons:
    """The other methods, fitted on the same held-out answers."""

    def __init__(self, p: np.ndarray, labels: np.ndarray):
        correct = p.argmax(axis=1) == labels
        self.doc_offset = float(correct.mean() - p.max(axis=1).mean())
        self.atc = {  # name -> (score, threshold)
            name: (score, ae.atc_threshold(ae.confidence_scores(p, score), correct))
            for name, score in ATC_SCORES.items()
        }
        self.thresholds = class_thresholds(p, labels)

    def overall(self, p: np.ndarray) -> dict[str, float]:
        confidence = float(p.max(axis=1).mean())
        atc = {
            name: float(np.mean(ae.confidence_scores(p, score) > t)) for name, (score, t) in self.atc.items()
        }
        return {"mean_confidence": confidence, "doc": confidence + self.doc_offset, **atc}

    def per_class_atc(self, p: np.ndarray, k: int) -> float | None:
        mine = p[p.argmax(axis=1) == k]
        if self.thresholds[k] is None or len(mine) < ae.MIN_CLASS_EXAMPLES:
            return None
        return float(np.mean(ae.confidence_scores(mine, ae.SCORE_NEGATIVE_ENTROPY) > self.thresholds[k]))


def one_case(
    family: str, case: str, p: np.ndarray, labels: np.ndarray, estimator: ae.Estimator, other: Comparisons
) -> dict:
    predicted = p.argmax(axis=1)
    got = estimator.estimate(p)
    chance_only = estimator.overall_reading(p).interval(0.0, 0.0)
    per_class = {}
    for k, name in enumerate(CLASS_NAMES):
        mine = got.per_class[name]
        if mine.value is None:
            continue
        per_class[name] = {
            "n": mine.n,
            "true": float(np.mean(labels[predicted == k] == k)),
            "estimate": mine.value,
            "low": mine.low,
            "high": mine.high,
            "mean_confidence": float(p[predicted == k].max(axis=1).mean()),
            "atc_class_threshold": other.per_class_atc(p, k),
        }
    return {
        "kind": family,
        "case": case,
        "images": len(p),
        "true": float(np.mean(predicted == labels)),
        "estimate": got.value,
        "low": got.low,
        "high": got.high,
        "chance_only_low": chance_only[0],
        "chance_only_high": chance_only[1],
        "ceiling": got.ceiling,
        "reading": got.method,
        **other.overall(p),
        "per_class": per_class,
    }


def shifted_cases(
    images: np.ndarray, labels: np.ndarray, predict, estimator: ae.Estimator, other: Comparisons, size: int
) -> list[dict]:
    rng = np.random.default_rng(0)
    subset = np.sort(rng.choice(len(images), size, replace=False)) if size < len(images) else slice(None)
    images, labels = images[subset], labels[subset]
    cases = [one_case(CLEAN, "clean test set", predict(images), labels, estimator, other)]
    for family, shifts in SHIFT_FAMILIES.items():
        for case, shift in shifts.cases().items():
            x, y = shift(images, labels)
            cases.append(one_case(family, case, predict(x), y, estimator, other))
            row = cases[-1]
            progress(f"{case:<40} true {row['true']:.3f} estimate {row['estimate']:.3f} "
                     f"[{row['low']:.3f}, {row['high']:.3f}]")  # fmt: skip
    return cases


def mae(pairs: list[tuple[float, float]]) -> float:
    return round(100 * float(np.mean([abs(a - b) for a, b in pairs])), 2)


def summary(cases: list[dict]) -> dict:
    """Errors in points (MAE), coverage and mean width of the intervals, over the shifted cases."""
    shifted = [c for c in cases if c["kind"] != CLEAN]
    clean = next(c for c in cases if c["kind"] == CLEAN)
    classes = [r for c in shifted for r in c["per_class"].values()]
    with_atc = [r for r in classes if r["atc_class_threshold"] is not None]
    moderate = [c for c in shifted if c["true"] >= 0.7]

    def covered(rows: list[dict], low: str, high: str) -> float:
        return round(float(np.mean([r[low] <= r["true"] <= r[high] for r in rows])), 3)

    return {
        "cases": len(shifted),
        "mae_points": {
            "estimate": mae([(c["estimate"], c["true"]) for c in shifted]),
            "mean_confidence": mae([(c["mean_confidence"], c["true"]) for c in shifted]),
            "doc": mae([(c["doc"], c["true"]) for c in shifted]),
            "atc_ne": mae([(c["atc_ne"], c["true"]) for c in shifted]),
            "atc_mc": mae([(c["atc_mc"], c["true"]) for c in shifted]),
        },
        "mae_points_true_accuracy_70_or_more": {
            "cases": len(moderate),
            "estimate": mae([(c["estimate"], c["true"]) for c in moderate]),
            "mean_confidence": mae([(c["mean_confidence"], c["true"]) for c in moderate]),
        },
        "read_as_class_mix": [c["case"] for c in cases if c["reading"] == ae.METHOD_CLASS_MIX],
        "clean_test_set": {k: clean[k] for k in ("true", "estimate", "low", "high", "mean_confidence")},
        "covered": f"{sum(c['low'] <= c['true'] <= c['high'] for c in shifted)}/{len(shifted)}",
        "coverage": covered(shifted, "low", "high"),
        "coverage_chance_only": covered(shifted, "chance_only_low", "chance_only_high"),
        "mean_width_points": round(100 * float(np.mean([c["high"] - c["low"] for c in shifted])), 1),
        "per_class": {
            "figures": len(classes),
            "mae_points_doc": mae([(r["estimate"], r["true"]) for r in classes]),
            "mae_points_mean_confidence": mae([(r["mean_confidence"], r["true"]) for r in classes]),
            "mae_points_atc_class_thresholds": mae([(r["atc_class_threshold"], r["true"]) for r in with_atc]),
            "coverage": covered(classes, "low", "high"),
            "mean_width_points": round(100 * float(np.mean([r["high"] - r["low"] for r in classes])), 1),
        },
        "worst": [
            {
                "case": c["case"],
                "true": round(c["true"], 3),
                "estimate": round(c["estimate"], 3),
                "interval": [round(c["low"], 3), round(c["high"], 3)],
            }
            for c in sorted(shifted, key=lambda c: -abs(c["estimate"] - c["true"]))[:WORST_SHOWN]
        ],  # fmt: skip
    }


def headline(s: dict) -> str:
    mae_points, per_class = s["mae_points"], s["per_class"]
    return (
        f"over {s['cases']} shifted cases: MAE {mae_points['estimate']} points (COT / class mix), "
        f"{mae_points['mean_confidence']} (mean confidence), {mae_points['atc_ne']} (ATC-NE); "
        f"interval holds the truth in {s['covered']} (chance only: {s['coverage_chance_only']:.0%}), "
        f"mean width {s['mean_width_points']} points; per class: MAE {per_class['mae_points_doc']} points "
        f"(DoC), coverage {per_class['coverage']:.0%}"
    )


def table(cases: list[dict]) -> str:
    lines = [
        f"{'case':<40} {'true':>6} {'estimate':>8} {'90 % interval':>15}  {'reading':<9} {'mean conf':>9} "
        f"{'ATC-NE':>7}  inside"
    ]
    for c in cases:
        inside = "yes" if c["low"] <= c["true"] <= c["high"] else "NO"
        reading = "class mix" if c["reading"] == ae.METHOD_CLASS_MIX else "COT"
        lines.append(
            f"{c['case']:<40} {c['true']:>6.3f} {c['estimate']:>8.3f} [{c['low']:.3f}, {c['high']:.3f}]"
            f"  {reading:<9} {c['mean_confidence']:>9.3f} {c['atc_ne']:>7.3f}  {inside}"
        )
    return "\n".join(lines)


ZOOM = ((0.72, 0.96), (0.5, 1.0))  # the right panel (true, estimated): mild shifts, crowded on the left
LABEL_OFFSETS = [(8, -14), (8, 8), (-150, 10), (-150, -14), (10, -26), (10, 20)]


def _panel(
    ax, cases: list[dict], limits: tuple[tuple[float, float], tuple[float, float]], named_below: float
) -> None:
    """True (across) against estimated (up) within `limits`: intervals, misses ringed, and named where the
    true accuracy is below `named_below`."""
    shown = [c for c in cases if limits[0][0] <= c["true"] <= limits[0][1]]
    true = np.array([c["true"] for c in shown])
    estimate = np.array([c["estimate"] for c in shown])
    errors = np.array([[c["estimate"] - c["low"] for c in shown], [c["high"] - c["estimate"] for c in shown]])
    missed = np.array([not c["low"] <= c["true"] <= c["high"] for c in shown])
    ax.plot([0, 1], [0, 1], color="grey", linewidth=1, label="estimate = truth")
    ax.errorbar(
        true, estimate, yerr=errors, fmt="o", color="tab:blue", alpha=0.7, elinewidth=1, capsize=2,
        markersize=5, label="the estimate (COT, or class mix) and its 90 % interval",
    )  # fmt: skip
    ax.scatter(true, [c["mean_confidence"] for c in shown], marker="x", color="tab:orange",
               label="mean confidence (baseline)")  # fmt: skip
    ax.scatter(true[missed], estimate[missed], s=130, facecolors="none", edgecolors="tab:red", linewidths=1.5,
               label="interval misses the truth")  # fmt: skip
    misses = [c for c, m in zip(shown, missed, strict=True) if m and c["true"] < named_below]
    for c, offset in zip(misses, LABEL_OFFSETS * 3, strict=False):
        ax.annotate(
            c["case"], (c["true"], c["estimate"]), textcoords="offset points", xytext=offset, fontsize=8,
            color="tab:red", arrowprops={"arrowstyle": "-", "color": "tab:red", "lw": 0.6},
        )  # fmt: skip
    ax.set(xlim=limits[0], ylim=limits[1], xlabel="true accuracy on the shifted test set")
    ax.grid(alpha=0.3)


def plot(cases: list[dict], path: Path) -> None:
    """True accuracy across, estimate up: the estimate with its interval, mean confidence beside it.

    All cases on the left; the mild shifts enlarged on the right. Misses are named on one of them.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    fig, (whole, mild) = plt.subplots(1, 2, figsize=(15, 7.5))
    (x0, x1), (y0, y1) = ZOOM
    _panel(whole, cases, ((0.0, 1.0), (0.0, 1.0)), named_below=x0)
    _panel(mild, cases, ZOOM, named_below=1.0)
    whole.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, linestyle="--", edgecolor="grey"))
    whole.set(
        ylabel="estimated accuracy (no labels)", title=f"All {len(cases)} versions of the official test set"
    )
    mild.set(title=f"True accuracy {x0:.2f} to {x1:.2f} (the dashed box), misses named")
    whole.legend(loc="lower right")
    fig.suptitle("Accuracy estimated without labels, against the truth")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", help="find the served model and its eval splits through ML Metadata")
    parser.add_argument("--model-dir", help="an exported model version (with `predict_images`)")
    parser.add_argument("--eval-dir", nargs="+", help="the model's held-out eval split directories")
    parser.add_argument("--source-dir", default=str(DEBIAN_DIR), help="the official IDX files")
    parser.add_argument(
        "--images", type=int, default=10000, help="test images per case (a fixed random subset)"
    )
    parser.add_argument(
        "--fit-images",
        type=int,
        help="fit on a seeded sample of this many eval images, as the Trainer does (default: all of them)",
    )
    parser.add_argument("--output", default=str(RESULTS / "accuracy_estimate.json"))
    parser.add_argument("--plot", default=str(RESULTS / "accuracy_estimate.png"))
    args = parser.parse_args()
    if args.workdir:
        model_dir, eval_dirs, version = served_model_and_eval_dirs(args.workdir)
    elif args.model_dir and args.eval_dir:
        model_dir, eval_dirs, version = args.model_dir, args.eval_dir, int(Path(args.model_dir).name)
    else:
        parser.error("give --workdir, or --model-dir and --eval-dir")

    predict = model_predictor(model_dir)
    images, labels = held_out(eval_dirs)
    split_images = len(labels)
    if args.fit_images:
        chosen = fit_sample(len(labels), args.fit_images, TrainingConfig().seed)  # the Trainer's own sample
        images, labels = images[chosen], labels[chosen]
    progress(f"fitting on {len(images)} held-out images and {len(FIT_SHIFTS)} synthetic shifts of them")
    started = time.monotonic()
    estimator = ae.fit_from_model(predict, images, labels)
    fit_seconds = round(time.monotonic() - started, 1)
    other = Comparisons(predict(images), labels)
    test_images, test_labels = official_test_set(Path(args.source_dir))
    cases = shifted_cases(test_images, test_labels, predict, estimator, other, args.images)

    result = {
        "command": command_line(),
        "date": time.strftime("%Y-%m-%d"),
        "cores": os.cpu_count(),
        "model_dir": model_dir,
        "version": version,
        "held_out": {"eval_dirs": eval_dirs, "images": len(images), "of_eval_images": split_images},
        "fit_seconds": fit_seconds,
        "method": ae.METHOD,
        "estimator": json.loads(estimator.to_json()),
        "summary": summary(cases),
        "cases": cases,
    }
    Path(args.output).write_text(json.dumps(result, indent=1))
    plot(cases, Path(args.plot))
    s = result["summary"]
    print(table(cases))
    print(f"\n{headline(s)}\nfit: {fit_seconds} s; written: {args.output}, {args.plot}")


if __name__ == "__main__":
    main()
