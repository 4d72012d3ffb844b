"""Pictures for the run report (people look at pictures): the confusion matrix and the reliability diagram."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI

import matplotlib.pyplot as plt
import numpy as np

from core import storage
from core.vocabulary import CLASS_NAMES


def save_confusion_matrix(matrix: np.ndarray, path: str, title: str) -> str:
    """Rows are true classes, columns predictions; each cell shows the count, shaded by row share."""
    row_share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(8.5, 7.5))
    image = ax.imshow(row_share, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(CLASS_NAMES)), CLASS_NAMES, rotation=45, ha="right")
    ax.set_yticks(range(len(CLASS_NAMES)), CLASS_NAMES)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    for (row, col), count in np.ndenumerate(matrix):
        if count:
            color = "white" if row_share[row, col] > 0.5 else "black"
            ax.text(col, row, f"{int(count)}", ha="center", va="center", fontsize=8, color=color)
    fig.colorbar(image, ax=ax, label="share of the true class")
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110)
    plt.close(fig)
    storage.write_bytes(path, png.getvalue())  # beside the report, on disk or in a bucket
    return path


def save_reliability_diagram(buckets: list[list[float]], path: str, title: str) -> str:
    """Accuracy against confidence per bucket of the top label's probability (the diagonal: calibrated),
    with how many test images fall in each bucket below; `buckets` rows are
    [low, high, examples, accuracy, mean confidence]."""
    rows = np.array(buckets, dtype=float)
    low, high, examples, accuracy, confidence = rows.T
    used = examples > 0
    width = high - low
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.5, 7.5), height_ratios=[3, 1], sharex=True)
    top.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect calibration")
    top.bar(low[used], accuracy[used], width=width[used], align="edge", color="#4c72b0", alpha=0.8,
            edgecolor="white", label="accuracy in the bucket")  # fmt: skip
    top.plot(confidence[used], accuracy[used], "o", color="#c44e52", label="at the bucket's mean confidence")
    top.set_ylabel("accuracy")
    top.set_ylim(0, 1.02)
    top.set_title(title)
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(low, examples, width=width, align="edge", color="#8c8c8c", edgecolor="white")
    bottom.set_yscale("log")
    bottom.set_xlabel("confidence (probability of the predicted class)")
    bottom.set_ylabel("test images")
    bottom.set_xlim(0, 1)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110)
    plt.close(fig)
    storage.write_bytes(path, png.getvalue())
    return path
