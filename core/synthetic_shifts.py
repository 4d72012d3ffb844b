"""Synthetic shifts of held-out images, on which the accuracy estimator measures its own error at fit time.

Under shift an estimator's error is mostly bias, not sampling noise, so the
estimator (`core/accuracy_estimate.py`) widens its interval by the error it
makes on these shifts of the held-out split, whose labels are known. They are
deliberately *other* kinds than the ones the accuracy-estimate benchmark checks
against (`monitoring/shifts.py`: brightness, contrast, noise, blur, translation,
rotation, occlusion, inversion, class mix), so that the benchmark measures how
the interval holds on kinds of shift it was never fitted on. Strengths span
from mild to severe; they were set before any estimate was looked at.

numpy and scipy only: the Trainer and the server may both use it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

ImageShift = Callable[[np.ndarray], np.ndarray]
SEED = 0


def clip_pixels(values: np.ndarray) -> np.ndarray:
    """Any numeric pixel values back to uint8 0..255."""
    return np.clip(values, 0, 255).astype(np.uint8)


def salt_and_pepper(share: float) -> ImageShift:
    """`share` of the pixels set to black or white at random: dead and hot sensor pixels."""

    def shift(images: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(SEED)
        hit = rng.random(images.shape) < share
        return np.where(hit, rng.choice(np.array([0, 255], np.uint8), images.shape), images).astype(np.uint8)

    return shift


def gamma(exponent: float) -> ImageShift:
    """Pixels mapped through (x / 255) ** exponent: a different camera response curve."""
    return lambda images: clip_pixels(255 * (images / 255.0) ** exponent)


def sheared(factor: float) -> ImageShift:
    """Rows moved sideways in proportion to their distance from the centre row: a slanted photo."""
    centre = 13.5
    matrix = np.array([[1.0, 0.0], [factor, 1.0]])
    offset = np.array([0.0, -factor * centre])
    return lambda images: np.stack([
        ndimage.affine_transform(image, matrix, offset=offset, order=1) for image in images
    ])  # fmt: skip


def pixelated(block: int) -> ImageShift:
    """Each `block` x `block` tile replaced by its mean: a low-resolution camera, scaled back up."""

    def shift(images: np.ndarray) -> np.ndarray:
        n, h, w = images.shape
        pad = (-h) % block, (-w) % block
        padded = np.pad(images.astype(np.float32), ((0, 0), (0, pad[0]), (0, pad[1])), mode="edge")
        tiles = padded.reshape(n, padded.shape[1] // block, block, padded.shape[2] // block, block)
        means = tiles.mean(axis=(2, 4), keepdims=True)
        return clip_pixels(np.broadcast_to(means, tiles.shape).reshape(padded.shape)[:, :h, :w])

    return shift


def zoomed(scale: float) -> ImageShift:
    """Every image scaled about its centre by `scale` (< 1: smaller, black around; > 1: cropped)."""
    centre = np.array([13.5, 13.5])
    matrix = np.eye(2) / scale
    offset = centre - matrix @ centre
    return lambda images: np.stack([
        ndimage.affine_transform(image, matrix, offset=offset, order=1) for image in images
    ])  # fmt: skip


def striped(period: int) -> ImageShift:
    """Every `period`-th row blacked out: interlacing or a scanner fault."""

    def shift(images: np.ndarray) -> np.ndarray:
        out = images.copy()
        out[:, ::period, :] = 0
        return out

    return shift


# name -> shift, for each fit-time case; mild to severe.
FIT_SHIFTS: dict[str, ImageShift] = {
    **{f"salt and pepper ({s:.0%})": salt_and_pepper(s) for s in (0.02, 0.05, 0.1, 0.2)},
    **{f"gamma {g}": gamma(g) for g in (0.4, 2.5, 4.0, 7.0)},
    **{f"sheared ({f})": sheared(f) for f in (0.2, 0.4, 0.6, 0.9)},
    **{f"pixelated ({b}x{b})": pixelated(b) for b in (2, 3, 4, 6)},
    **{f"zoomed (x{s})": zoomed(s) for s in (0.8, 0.65, 0.5, 1.3)},
    **{f"striped (every {p} rows)": striped(p) for p in (6, 4, 3, 2)},
}
