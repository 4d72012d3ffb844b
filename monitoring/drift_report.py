"""The drift report: an HTML page a person reads in a minute, and a JSON summary for machines.

The page opens with the verdict and, beside it, the model's estimated accuracy
on the batch (`monitoring/estimated_accuracy.py`) in words a person can act on
("expect about N wrong answers per 1,000 requests"), with its interval and per
predicted class; then the rule, pictures (the mean image of batch and
reference and their difference, the predicted-class distribution, and per
drifted feature its distribution in batch and reference), and the features
sorted by how far past (or short of) their threshold they are. Every feature
is named in words (a grid cell also by a small picture of the grid) and drawn
on an axis in its own units (intensity 0-255, share of pixels, pixels from an
edge; `monitoring.drift.MEANINGS`). TFDV's own statistics comparison (Facets)
is written beside it and linked.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI

import matplotlib.pyplot as plt
import numpy as np
from tensorflow_metadata.proto.v0 import statistics_pb2

from core import storage
from core.accuracy_estimate import MIN_CLASS_EXAMPLES, ClassEstimate
from core.image_features import GRID
from core.vocabulary import CLASS_NAMES
from monitoring.drift import MEANINGS, PREDICTED_CLASS, DriftResult, Reference
from monitoring.estimated_accuracy import ESTIMATED_ACCURACY, AccuracyEstimate, percent

MAX_FEATURE_PLOTS = 8
REPORT_FILE, SUMMARY_FILE, FACETS_FILE = "drift_report.html", "drift_summary.json", "tfdv_comparison.html"


def distribution(statistics: statistics_pb2.DatasetFeatureStatisticsList, feature: str) -> dict[str, float]:
    """Share of each value (bin or class) of a categorical feature, from TFDV's rank histogram."""
    for stats in statistics.datasets[0].features:
        if stats.path.step[0] == feature:
            buckets = stats.string_stats.rank_histogram.buckets
            total = sum(b.sample_count for b in buckets) or 1.0
            return {b.label: b.sample_count / total for b in buckets}
    return {}


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _bin_index(label: str) -> int:
    """The bin number of a binned feature's value ("bin07" -> 7)."""
    return int(label.removeprefix("bin"))


def _classes_plot(result: DriftResult, reference: Reference) -> str:
    """The share of each predicted class in reference and batch, side by side."""
    batch = distribution(result.batch_statistics, PREDICTED_CLASS)
    ref = distribution(reference.statistics, PREDICTED_CLASS)
    x = np.arange(len(CLASS_NAMES))
    fig, ax = plt.subplots(figsize=(6.2, 2.6))
    ax.bar(x - 0.2, [ref.get(k, 0) for k in CLASS_NAMES], 0.4, label="reference", color="#8da0cb")
    ax.bar(x + 0.2, [batch.get(k, 0) for k in CLASS_NAMES], 0.4, label="batch", color="#fc8d62")
    ax.set_xticks(x, CLASS_NAMES, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("share of images")
    ax.legend(fontsize=8)
    return _png(fig)


def histogram_figure(result: DriftResult, reference: Reference, feature: str):
    """A numeric feature's distribution in reference and batch, on an axis in the feature's own units."""
    meaning = MEANINGS[feature]
    width = meaning.scale / result.bins  # one bin, in the feature's units
    batch = distribution(result.batch_statistics, feature)
    ref = distribution(reference.statistics, feature)
    centres = (np.arange(result.bins) + 0.5) * width
    shares = [
        [sum(v for k, v in d.items() if _bin_index(k) == i) for i in range(result.bins)] for d in (ref, batch)
    ]
    fig, ax = plt.subplots(figsize=(6.2, 2.6))
    ax.bar(centres - width * 0.2, shares[0], width * 0.4, label="reference", color="#8da0cb")
    ax.bar(centres + width * 0.2, shares[1], width * 0.4, label="batch", color="#fc8d62")
    ax.set_xlim(0, meaning.scale)
    ax.set_xlabel(f"{meaning.axis}{f' ({meaning.unit})' if meaning.unit else ''}", fontsize=8)
    ax.set_ylabel("share of images")
    ax.legend(fontsize=8)
    return fig


def grid_picture(cell: tuple[int, int], size: int = 42) -> str:
    """An inline SVG of the feature grid over the image, its cell filled: where a grid feature looks."""
    step = size / GRID
    squares = "".join(
        f"<rect x='{c * step:.1f}' y='{r * step:.1f}' width='{step:.1f}' height='{step:.1f}' "
        f"fill='{'#d6604d' if (r, c) == cell else '#f7f7f7'}' stroke='#888' stroke-width='0.6'/>"
        for r in range(GRID)
        for c in range(GRID)
    )
    row, col = cell
    return (
        f"<svg class='grid' width='{size}' height='{size}' viewBox='0 0 {size} {size}' role='img'>"
        f"<title>row {row + 1}, column {col + 1} of the {GRID}x{GRID} grid</title>{squares}</svg>"
    )


def feature_name(feature: str) -> str:
    """HTML: the feature in words (with the grid picture for a grid cell), and its name in the data."""
    meaning = MEANINGS.get(feature)
    if meaning is None:
        return f"<code>{html.escape(feature)}</code>"
    picture = grid_picture(meaning.grid_cell) if meaning.grid_cell is not None else ""
    return f"{picture}{html.escape(meaning.words)} <code>{html.escape(feature)}</code>"


def _mean_images(result: DriftResult, reference: Reference) -> str:
    fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.7))
    difference = result.batch_mean_image - reference.mean_image
    limit = max(float(np.abs(difference).max()), 1e-3)
    for ax, image, title, cmap, bounds in (
        (axes[0], reference.mean_image, "reference mean", "gray", (0, 1)),
        (axes[1], result.batch_mean_image, "batch mean", "gray", (0, 1)),
        (axes[2], difference, "batch - reference", "RdBu_r", (-limit, limit)),
    ):
        shown = ax.imshow(image, cmap=cmap, vmin=bounds[0], vmax=bounds[1])
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.colorbar(shown, ax=axes[2], fraction=0.046)
    return _png(fig)


def summary(
    result: DriftResult,
    reference: Reference,
    source: str,
    served_version: int | None,
    accuracy: AccuracyEstimate,
) -> dict[str, Any]:
    return {
        "verdict": "drift" if result.drifted else "no drift",
        "drifted": result.drifted,
        ESTIMATED_ACCURACY: accuracy.to_dict(),
        "rule": result.rule,
        "batch": {"source": source, "images": result.images},
        "reference": {"description": reference.description, "images": reference.images},
        "served_version": served_version,
        "drifted_features": [f.feature for f in result.drifted_features],
        "features": [{**f.__dict__, "words": _words(f.feature)} for f in result.features],
    }


def _words(feature: str) -> str | None:
    meaning = MEANINGS.get(feature)
    return meaning.words if meaning else None


def write_report(
    result: DriftResult,
    reference: Reference,
    source: str,
    output_dir: str,
    accuracy: AccuracyEstimate,
    served_version: int | None = None,
) -> dict[str, str]:
    """Write the HTML report, the JSON summary and TFDV's comparison view; return their paths."""
    import tensorflow_data_validation as tfdv

    storage.make_dirs(output_dir)
    data = summary(result, reference, source, served_version, accuracy)
    paths = {name: os.path.join(output_dir, name) for name in (REPORT_FILE, SUMMARY_FILE, FACETS_FILE)}
    storage.write_text(paths[SUMMARY_FILE], json.dumps(data, indent=2))
    facets = tfdv.utils.display_util.get_statistics_html(
        lhs_statistics=result.batch_statistics,
        rhs_statistics=reference.statistics,
        lhs_name="batch",
        rhs_name="reference",
    )
    storage.write_text(paths[FACETS_FILE], facets)
    storage.write_text(paths[REPORT_FILE], _html(result, reference, data, accuracy))
    return paths


def _estimate_box(accuracy: AccuracyEstimate) -> str:
    """The estimated accuracy beside the verdict: the figure, its interval, and wrong answers per 1,000."""
    if accuracy.estimate is None:
        why = html.escape(accuracy.why_not or "")
        return f"<div class='estimate none'><b>Accuracy not estimated:</b><br>{why}</div>"
    meaning = html.escape(accuracy.meaning())
    return (
        f"<div class='estimate'><b>Estimated accuracy: {html.escape(accuracy.figure())}</b><br>"
        f"{meaning[0].upper()}{meaning[1:]}.</div>"
    )


def _estimate_details(accuracy: AccuracyEstimate) -> str:
    """How the estimate was made, what it cannot see, and its figure per predicted class."""
    found = accuracy.estimator
    if accuracy.estimate is None or found is None or found.estimator is None:
        return ""
    e, fitted = accuracy.estimate, found.estimator
    which = f"version {found.version}'s" if found.version is not None else "the model's"
    caution = f"<p class='caution'>Caution: {html.escape(accuracy.caution)}.</p>" if accuracy.caution else ""
    rows = "".join(_class_row(name, c) for name, c in sorted(e.per_class.items(), key=lambda kv: -kv[1].n))
    return f"""<p>Estimated without labels from {html.escape(accuracy.answers)} for these {e.n:,} images,
by {which} accuracy estimator, method {html.escape(e.method)}, fitted when the model was trained on
{fitted.held_out_examples:,} held-out images it had never trained on (it answered
{percent(fitted.held_out_accuracy)} of them right). It reads how sure the model is of its answers
and how they spread over the classes. If they look like the held-out answers in other proportions, the
estimate takes the mix of classes as changed (method "class mix changed"); otherwise answers that crowd
onto a class beyond its usual share count as wrong, however sure (method "COT"). Answers that are wrong
yet confident and spread as usual (strong rotation or translation) leave it too high; labelling a fair
sample of the requests tells for sure (<code>fmnist data requests</code>, in log order). The interval
is wider the further the batch moved from the held-out images.</p>{caution}
<table><tr><th>the model answered</th><th>answers</th><th>estimated accuracy</th><th>90 % interval</th></tr>
{rows}</table>"""


def _class_row(name: str, estimate: ClassEstimate) -> str:
    if estimate.value is None:
        cells = f"<td colspan='2'>fewer than {MIN_CLASS_EXAMPLES} answers: not estimated</td>"
    else:
        cells = (
            f"<td>{percent(estimate.value)}</td><td>{percent(estimate.low)} to {percent(estimate.high)}</td>"
        )
    return f"<tr><td>{html.escape(name)}</td><td>{estimate.n:,}</td>{cells}</tr>"


def _figure(picture: str, caption: str) -> str:
    """A plot under its caption: what it shows is read before the plot."""
    return f"<figure><figcaption>{caption}</figcaption><img src='data:image/png;base64,{picture}'></figure>"


def _html(result: DriftResult, reference: Reference, data: dict[str, Any], accuracy: AccuracyEstimate) -> str:
    colour = "#b2182b" if result.drifted else "#1a9850"
    drifted = result.drifted_features
    headline = (
        f"DRIFT: {len(drifted)} of {len(result.features)} features moved"
        if result.drifted
        else f"NO DRIFT: all {len(result.features)} features within their thresholds"
    )
    rows = "".join(
        f"<tr class='{'bad' if f.drifted else ''}'><td>{feature_name(f.feature)}</td><td>{f.measure}</td>"
        f"<td>{f.distance:.4f}</td><td>{f.threshold:.4f}</td><td>{'drift' if f.drifted else 'ok'}</td></tr>"
        for f in result.features
    )
    plotted = [f.feature for f in drifted if f.feature != PREDICTED_CLASS][:MAX_FEATURE_PLOTS]
    if not plotted:  # nothing moved: show the closest calls
        plotted = [f.feature for f in result.features if f.feature != PREDICTED_CLASS][:2]
    figures = [_figure(_mean_images(result, reference), "the average image of each, and where they differ")]
    if distribution(reference.statistics, PREDICTED_CLASS) and distribution(
        result.batch_statistics, PREDICTED_CLASS
    ):
        figures.append(_figure(_classes_plot(result, reference), feature_name(PREDICTED_CLASS)))
    figures += [
        _figure(_png(histogram_figure(result, reference, name)), feature_name(name)) for name in plotted
    ]
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Fashion-MNIST drift report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 72em; }}
.top {{ display: flex; gap: 1em; align-items: stretch; }}
.verdict {{ background: {colour}; color: white; padding: 0.8em 1em; font-size: 1.4em; flex: 1; }}
.estimate {{ border: 3px solid #2166ac; padding: 0.6em 1em; font-size: 1.1em; flex: 1.4; }}
.estimate.none {{ border-color: #999; color: #444; }}
.caution {{ color: #b2182b; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 0.2em 0.6em; }}
tr.bad td {{ background: #fddbc7; }}
figure {{ display: inline-block; margin: 0.3em; vertical-align: top; }}
figure img {{ border: 1px solid #eee; }} figcaption {{ font-size: 0.9em; max-width: 540px; }}
svg.grid {{ vertical-align: middle; margin-right: 0.4em; }} code {{ color: #666; font-size: 0.85em; }}
</style></head><body>
<div class="top"><div class="verdict">{html.escape(headline)}</div>{_estimate_box(accuracy)}</div>
{_estimate_details(accuracy)}
<p><b>Batch:</b> {html.escape(data['batch']['source'])} ({result.images} images)<br>
<b>Reference:</b> {html.escape(reference.description)}<br>
<b>Rule:</b> {html.escape(result.rule)}.<br>
Each image is summarised by features a person would notice, named in words below (a grid cell also by
a picture of the {GRID}x{GRID} grid laid over the 28x28 image, the filled cell being the one measured).
Each feature's values are counted in {result.bins} equal ranges, in batch and reference alike, and drawn
in the feature's own units.
<a href="{FACETS_FILE}">TFDV's statistics comparison (Facets)</a> shows every feature in full.</p>
<h2>Pictures</h2>
{''.join(figures)}
<h2>Features (most moved first)</h2>
<table><tr><th>feature</th><th>measure (TFDV)</th><th>distance</th><th>threshold</th><th>status</th></tr>
{rows}</table>
</body></html>
"""
