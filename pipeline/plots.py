"""Pictures for the run report (people look at pictures): the confusion matrix as a PNG."""

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
