"""The drift report: an HTML page a person reads in a minute, and a JSON summary for machines.

The page opens with the verdict and the rule, then the features sorted by how
far past (or short of) their threshold they are, then pictures: per drifted
feature the distribution in the batch against the reference, the mean image of
each and their difference, and the predicted-class distribution. TFDV's own
statistics comparison (Facets) is written beside it and linked.
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
from core.vocabulary import CLASS_NAMES
from monitoring.drift import PREDICTED_CLASS, DriftResult, Reference

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


def _bars(result: DriftResult, reference: Reference, feature: str, order: list[str] | None = None) -> str:
    batch = distribution(result.batch_statistics, feature)
    ref = distribution(reference.statistics, feature)
    labels = order or sorted(set(batch) | set(ref))
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(6.2, 2.6))
    ax.bar(x - 0.2, [ref.get(k, 0) for k in labels], 0.4, label="reference", color="#8da0cb")
    ax.bar(x + 0.2, [batch.get(k, 0) for k in labels], 0.4, label="batch", color="#fc8d62")
    ticks = [k.replace("bin", "") for k in labels]
    ax.set_xticks(x, ticks, rotation=45 if order else 0, ha="right" if order else "center", fontsize=7)
    ax.set_ylabel("share")
    if not order:
        ax.set_xlabel("bin number (fixed-width bins on [0, 1], low to high)", fontsize=8)
    ax.set_title(feature if not order else "predicted class", fontsize=10)
    ax.legend(fontsize=8)
    return _png(fig)


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
    result: DriftResult, reference: Reference, source: str, served_version: int | None
) -> dict[str, Any]:
    return {
        "verdict": "drift" if result.drifted else "no drift",
        "drifted": result.drifted,
        "rule": result.rule,
        "batch": {"source": source, "images": result.images},
        "reference": {"description": reference.description, "images": reference.images},
        "served_version": served_version,
        "drifted_features": [f.feature for f in result.drifted_features],
        "features": [f.__dict__ for f in result.features],
    }


def write_report(
    result: DriftResult,
    reference: Reference,
    source: str,
    output_dir: str,
    served_version: int | None = None,
) -> dict[str, str]:
    """Write the HTML report, the JSON summary and TFDV's comparison view; return their paths."""
    import tensorflow_data_validation as tfdv

    storage.make_dirs(output_dir)
    data = summary(result, reference, source, served_version)
    paths = {name: os.path.join(output_dir, name) for name in (REPORT_FILE, SUMMARY_FILE, FACETS_FILE)}
    storage.write_text(paths[SUMMARY_FILE], json.dumps(data, indent=2))
    facets = tfdv.utils.display_util.get_statistics_html(
        lhs_statistics=result.batch_statistics,
        rhs_statistics=reference.statistics,
        lhs_name="batch",
        rhs_name="reference",
    )
    storage.write_text(paths[FACETS_FILE], facets)
    storage.write_text(paths[REPORT_FILE], _html(result, reference, data))
    return paths


def _html(result: DriftResult, reference: Reference, data: dict[str, Any]) -> str:
    colour = "#b2182b" if result.drifted else "#1a9850"
    drifted = result.drifted_features
    headline = (
        f"DRIFT: {len(drifted)} of {len(result.features)} features moved"
        if result.drifted
        else f"NO DRIFT: all {len(result.features)} features within their thresholds"
    )
    rows = "".join(
        f"<tr class='{'bad' if f.drifted else ''}'><td>{html.escape(f.feature)}</td><td>{f.measure}</td>"
        f"<td>{f.distance:.4f}</td><td>{f.threshold:.4f}</td><td>{'drift' if f.drifted else 'ok'}</td></tr>"
        for f in result.features
    )
    plotted = [f.feature for f in drifted if f.feature != PREDICTED_CLASS][:MAX_FEATURE_PLOTS]
    if not plotted:  # nothing moved: show the closest calls
        plotted = [f.feature for f in result.features if f.feature != PREDICTED_CLASS][:2]
    pictures = [f"<img src='data:image/png;base64,{_mean_images(result, reference)}'>"]
    if distribution(reference.statistics, PREDICTED_CLASS) and distribution(
        result.batch_statistics, PREDICTED_CLASS
    ):
        classes = _bars(result, reference, PREDICTED_CLASS, list(CLASS_NAMES))
        pictures.append(f"<img src='data:image/png;base64,{classes}'>")
    pictures += [f"<img src='data:image/png;base64,{_bars(result, reference, name)}'>" for name in plotted]
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Fashion-MNIST drift report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 70em; }}
.verdict {{ background: {colour}; color: white; padding: 0.8em 1em; font-size: 1.4em; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 0.2em 0.6em; }}
tr.bad td {{ background: #fddbc7; }} img {{ margin: 0.3em; border: 1px solid #eee; }}
</style></head><body>
<div class="verdict">{html.escape(headline)}</div>
<p><b>Batch:</b> {html.escape(data['batch']['source'])} ({result.images} images)<br>
<b>Reference:</b> {html.escape(reference.description)}<br>
<b>Rule:</b> {html.escape(result.rule)}.<br>
Image features are binned into fixed bins on [0, 1] (bin numbers on the plots' x axes); see
<code>components/image_features.py</code> for what each measures.
<a href="{FACETS_FILE}">TFDV's statistics comparison (Facets)</a> shows every feature in full.</p>
<h2>Pictures</h2>
{''.join(pictures)}
<h2>Features (most moved first)</h2>
<table><tr><th>feature</th><th>measure (TFDV)</th><th>distance</th><th>threshold</th><th>status</th></tr>
{rows}</table>
</body></html>
"""
