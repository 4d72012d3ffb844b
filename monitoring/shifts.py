"""Known distribution shifts of clothing images, for the drift benchmark and tests.

Each shift takes uint8 images [n, 28, 28] and their labels and returns the
shifted images and their labels (class shifts drop or repeat images).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

SNEAKER, BAG = 7, 8
Shift = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def _clip(values: np.ndarray) -> np.ndarray:
    return np.clip(values, 0, 255).astype(np.uint8)


def _pixels(change: Callable[[np.ndarray], np.ndarray]) -> Shift:
    """A shift of the pixels only: every image stays, with its label."""
    return lambda images, labels: (change(images), labels)


def _noise(images: np.ndarray) -> np.ndarray:
    return _clip(images + np.random.default_rng(0).normal(0, 25, images.shape))


def _remove(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = labels != SNEAKER
    return images[keep], labels[keep]


def _over_represent(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Half the batch Bags (repeated as needed), half the other classes."""
    bags, others = np.flatnonzero(labels == BAG), np.flatnonzero(labels != BAG)
    half = len(images) // 2
    order = np.concatenate([others[:half], np.resize(bags, len(images) - half)])
    return images[order], labels[order]


SHIFTS: dict[str, Shift] = {
    "darker (x0.7)": _pixels(lambda x: _clip(x * 0.7)),
    "brighter (+40)": _pixels(lambda x: _clip(x.astype(np.int32) + 40)),
    "lower contrast (x0.6 around mid-grey)": _pixels(
        lambda x: _clip((x.astype(np.float32) - 128) * 0.6 + 128)
    ),
    "gaussian noise (sd 25)": _pixels(_noise),
    "blur (3x3 box)": _pixels(lambda x: _clip(ndimage.uniform_filter(x.astype(np.float32), size=(1, 3, 3)))),
    "translated (3 px right)": _pixels(lambda x: np.roll(x, 3, axis=2)),
    "rotated (15 degrees)": _pixels(lambda x: ndimage.rotate(x, 15, axes=(1, 2), reshape=False, order=1)),
    "inverted": _pixels(lambda x: 255 - x),
    "Sneaker class removed": _remove,
    "Bag class over-represented (50 %)": _over_represent,
}
