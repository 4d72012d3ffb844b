"""Image-level features: what a person would notice about a batch of clothing images.

Raw pixels pooled into one 784-value feature hide most shifts (a brighter or
shifted batch has nearly the same pooled pixel histogram), so drift is measured
on per-image summaries instead. One definition, used by the drift report for
the reference (training) data and for the batch under test alike.

All features are floats in [0, 1]:

- `mean_intensity`, `contrast` (standard deviation), `ink_fraction` (pixels
  above half intensity), `sharpness` (mean absolute difference of neighbouring
  pixels; blur lowers it, noise raises it);
- `center_row`, `center_col`: the intensity-weighted centre of mass;
- `bbox_top`, `bbox_bottom`, `bbox_left`, `bbox_right`: the box around pixels
  above 10 % intensity;
- `grid_<r><c>`: mean intensity of a 4 x 4 grid of 7 x 7 blocks.

`FEATURE_MEANINGS` says the same for a person reading a drift report: each
feature in words, and the axis its values are drawn on in their own units
(intensity 0-255, share of pixels, pixels from an edge) rather than as
fractions or bin numbers.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from core.vocabulary import IMAGE_HEIGHT, IMAGE_WIDTH, MAX_PIXEL

GRID = 4
INK_LEVEL = 0.5
BOX_LEVEL = 0.1
GRID_FEATURES = tuple(f"grid_{r}{c}" for r in range(GRID) for c in range(GRID))
FEATURE_NAMES = (
    "mean_intensity",
    "contrast",
    "ink_fraction",
    "sharpness",
    "center_row",
    "center_col",
    "bbox_top",
    "bbox_bottom",
    "bbox_left",
    "bbox_right",
    *GRID_FEATURES,
)
EDGE = IMAGE_HEIGHT - 1  # the last row (and column) index: positions are fractions of it


@dataclasses.dataclass(frozen=True)
class FeatureMeaning:
    """A feature in words, and its axis: a value v in [0, 1] is drawn at v * `scale` `unit`."""

    words: str
    axis: str
    scale: float
    unit: str = ""
    grid_cell: tuple[int, int] | None = None  # (row, column) from the top left, 0-based, of a grid feature


INTENSITY = "(0 = black background, 255 = white)"
INK_PIXEL = math.floor(INK_LEVEL * MAX_PIXEL) + 1  # the dimmest pixel value that counts as ink


def _grid_meaning(row: int, col: int) -> FeatureMeaning:
    block = IMAGE_HEIGHT // GRID  # the cell's side in pixels
    return FeatureMeaning(
        f"mean intensity of the cell in row {row + 1}, column {col + 1} of a {GRID}x{GRID} grid",
        f"mean intensity of the {block}x{block}-pixel cell {INTENSITY}",
        MAX_PIXEL,
        grid_cell=(row, col),
    )


FEATURE_MEANINGS: dict[str, FeatureMeaning] = {
    "mean_intensity": FeatureMeaning("mean intensity of the whole image", f"mean {INTENSITY}", MAX_PIXEL),
    "contrast": FeatureMeaning(
        "contrast: how far pixel intensities spread (their standard deviation)",
        "standard deviation of intensity (0-255 scale)",
        MAX_PIXEL,
    ),
    "ink_fraction": FeatureMeaning(
        f"share of pixels brighter than half intensity ({INK_PIXEL} or more of {MAX_PIXEL})",
        "share of the image's pixels",
        100,
        "%",
    ),
    "sharpness": FeatureMeaning(
        "sharpness: mean intensity step between neighbouring pixels (blur lowers it, noise raises it)",
        "mean step between neighbouring pixels (intensity, 0-255 scale)",
        MAX_PIXEL,
    ),
    "center_row": FeatureMeaning(
        "height of the centre of brightness (intensity-weighted mean row)",
        f"pixels from the top edge (0-{EDGE})",
        EDGE,
    ),
    "center_col": FeatureMeaning(
        "left-right position of the centre of brightness (intensity-weighted mean column)",
        f"pixels from the left edge (0-{EDGE})",
        EDGE,
    ),
    **{
        f"bbox_{side}": FeatureMeaning(
            f"{side} side of the box around every pixel above {BOX_LEVEL:.0%} intensity "
            f"({'its first' if side in ('top', 'left') else 'its last'} {kind} with such a pixel)",
            f"pixels from the {edge} edge (0-{EDGE})",
            EDGE,
        )
        for side, kind, edge in (
            ("top", "row", "top"),
            ("bottom", "row", "top"),
            ("left", "column", "left"),
            ("right", "column", "left"),
        )
    },
    **{f"grid_{r}{c}": _grid_meaning(r, c) for r in range(GRID) for c in range(GRID)},
}


def _box_edges(mask: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """First and last index along rows (axis=2 reduces columns) holding a marked pixel, as fractions."""
    any_marked = mask.any(axis=axis)
    size = any_marked.shape[1]
    first = np.where(any_marked.any(axis=1), any_marked.argmax(axis=1), 0)
    last = np.where(any_marked.any(axis=1), size - 1 - any_marked[:, ::-1].argmax(axis=1), size - 1)
    return first / (size - 1), last / (size - 1)


def image_features(images: np.ndarray) -> dict[str, np.ndarray]:
    """Feature name -> float32 [n] for uint8 images [n, 28, 28]."""
    if images.ndim != 3 or images.shape[1:] != (IMAGE_HEIGHT, IMAGE_WIDTH):
        raise ValueError(f"images must be [n, {IMAGE_HEIGHT}, {IMAGE_WIDTH}], got {list(images.shape)}")
    x = images.astype(np.float32) / MAX_PIXEL
    n = len(x)
    flat = x.reshape(n, -1)
    features = {
        "mean_intensity": flat.mean(axis=1),
        "contrast": flat.std(axis=1),
        "ink_fraction": (flat > INK_LEVEL).mean(axis=1),
        "sharpness": (
            np.abs(np.diff(x, axis=1)).mean(axis=(1, 2)) + np.abs(np.diff(x, axis=2)).mean(axis=(1, 2))
        )
        / 2,
    }
    total = flat.sum(axis=1)
    safe_total = np.where(total > 0, total, 1.0)
    rows = np.arange(IMAGE_HEIGHT, dtype=np.float32) / (IMAGE_HEIGHT - 1)
    cols = np.arange(IMAGE_WIDTH, dtype=np.float32) / (IMAGE_WIDTH - 1)
    features["center_row"] = np.where(total > 0, (x.sum(axis=2) @ rows) / safe_total, 0.5)
    features["center_col"] = np.where(total > 0, (x.sum(axis=1) @ cols) / safe_total, 0.5)
    mask = x > BOX_LEVEL
    features["bbox_top"], features["bbox_bottom"] = _box_edges(mask, axis=2)
    features["bbox_left"], features["bbox_right"] = _box_edges(mask, axis=1)
    block = IMAGE_HEIGHT // GRID
    blocks = x.reshape(n, GRID, block, GRID, block).mean(axis=(2, 4))
    for r in range(GRID):
        for c in range(GRID):
            features[f"grid_{r}{c}"] = blocks[:, r, c]
    return {name: np.asarray(features[name], dtype=np.float32) for name in FEATURE_NAMES}


def mean_image(images: np.ndarray) -> np.ndarray:
    """The average image of a batch, float [28, 28] in [0, 1]: what a person compares first."""
    return images.mean(axis=0) / MAX_PIXEL


def binned(values: np.ndarray, bins: int) -> np.ndarray:
    """Fixed-width bin labels ("bin00".."bin19" for 20 bins) of values in [0, 1].

    Drift is measured on these categories: shared fixed bins make batch and
    reference histograms comparable (see monitoring/drift.py for why).
    """
    index = np.clip((np.asarray(values) * bins).astype(np.int64), 0, bins - 1)
    return np.array([f"bin{i:02d}" for i in range(bins)])[index]


def binned_features(images: np.ndarray, bins: int) -> dict[str, np.ndarray]:
    """Feature name -> bin labels [n], for TFDV statistics of the image features."""
    return {name: binned(values, bins) for name, values in image_features(images).items()}
