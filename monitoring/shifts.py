"""Known distribution shifts of clothing images, for the drift and accuracy-estimate benchmarks and tests.

Each shift takes uint8 images [n, 28, 28] and their labels and returns the
shifted images and their labels (class shifts drop or repeat images).

`SHIFTS` holds the fixed-strength shifts the drift benchmark flags;
`SHIFT_FAMILIES` the same kinds and more, each a function of its strength,
with the strengths the accuracy-estimate benchmark runs. Their strengths were
chosen by the true accuracy they leave (from near the clean one to below 50 %),
never by how well an estimator does on them. The estimator's own fit-time
shifts (`core/synthetic_shifts.py`) are other kinds, so the benchmark checks the
estimator on shifts it never saw.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from core.synthetic_shifts import clip_pixels

T_SHIRT, PULLOVER, COAT, SHIRT, SNEAKER, BAG = 0, 2, 4, 6, 7, 8
# The classes the model confuses most (tops): a batch rich in them is harder than the test set.
HARD_CLASSES = (T_SHIRT, PULLOVER, COAT, SHIRT)
Shift = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def _pixels(change: Callable[[np.ndarray], np.ndarray]) -> Shift:
    """A shift of the pixels only: every image stays, with its label."""
    return lambda images, labels: (change(images), labels)


def darker(factor: float) -> Shift:
    """Every pixel times `factor` (< 1): under-exposed photos."""
    return _pixels(lambda x: clip_pixels(x * factor))


def brighter(offset: float) -> Shift:
    """`offset` added to every pixel, background included: a grey backdrop."""
    return _pixels(lambda x: clip_pixels(x.astype(np.int32) + offset))


def lower_contrast(factor: float) -> Shift:
    """Pixels pulled towards mid-grey: `factor` 1 leaves them, 0 makes every image flat grey."""
    return _pixels(lambda x: clip_pixels((x.astype(np.float32) - 128) * factor + 128))


def gaussian_noise(sd: float) -> Shift:
    """Independent normal noise of standard deviation `sd` (pixel units) on every pixel; fixed seed."""
    return _pixels(lambda x: clip_pixels(x + np.random.default_rng(0).normal(0, sd, x.shape)))


def box_blur(size: int) -> Shift:
    """Each pixel the mean of a `size` x `size` box around it: out of focus."""
    return _pixels(lambda x: clip_pixels(ndimage.uniform_filter(x.astype(np.float32), size=(1, size, size))))


def translated(pixels: int) -> Shift:
    """Every image moved `pixels` to the right (wrapping round; the borders are black)."""
    return _pixels(lambda x: np.roll(x, pixels, axis=2))


def rotated(degrees: float) -> Shift:
    """Every image turned by `degrees` about its centre, bilinear."""
    return _pixels(lambda x: ndimage.rotate(x, degrees, axes=(1, 2), reshape=False, order=1))


def occluded(size: int) -> Shift:
    """A black `size` x `size` square at a random place inside each image (fixed seed): a hand or tag."""

    def change(images: np.ndarray) -> np.ndarray:
        out = images.copy()
        corners = np.random.default_rng(0).integers(0, images.shape[1] - size + 1, (len(images), 2))
        for image, (row, col) in zip(out, corners, strict=True):
            image[row : row + size, col : col + size] = 0
        return out

    return _pixels(change)


def partly_inverted(share: float) -> Shift:
    """The first `share` of the images inverted (255 - pixels): dark clothes on a white background."""

    def change(images: np.ndarray) -> np.ndarray:
        out = images.copy()
        count = round(len(images) * share)
        out[:count] = 255 - out[:count]
        return out

    return _pixels(change)


def hard_class_mix(share: float) -> Shift:
    """Label shift: `share` of the batch drawn from the classes the model confuses most, the rest from the
    others, the batch size kept (images repeated as needed). Pixels unchanged."""

    def shift(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        hard = np.isin(labels, HARD_CLASSES)
        count = round(len(images) * share)
        order = np.concatenate([
            np.resize(np.flatnonzero(hard), count),
            np.resize(np.flatnonzero(~hard), len(images) - count),
        ])  # fmt: skip
        return images[order], labels[order]

    return shift


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
    "darker (x0.7)": darker(0.7),
    "brighter (+40)": brighter(40),
    "lower contrast (x0.6 around mid-grey)": lower_contrast(0.6),
    "gaussian noise (sd 25)": gaussian_noise(25),
    "blur (3x3 box)": box_blur(3),
    "translated (3 px right)": translated(3),
    "rotated (15 degrees)": rotated(15),
    "inverted": partly_inverted(1.0),
    "Sneaker class removed": _remove,
    "Bag class over-represented (50 %)": _over_represent,
}


@dataclass(frozen=True)
class ShiftFamily:
    """One kind of shift at several strengths: `make(strength)` is the shift, `label` names one case."""

    make: Callable[[float], Shift]
    strengths: tuple[float, ...]
    label: str  # formatted with the strength: "darker (x{})"

    def cases(self) -> dict[str, Shift]:
        return {self.label.format(s): self.make(s) for s in self.strengths}


SHIFT_FAMILIES: dict[str, ShiftFamily] = {
    "darker": ShiftFamily(darker, (0.5, 0.3, 0.15), "darker (x{})"),
    "brighter": ShiftFamily(brighter, (20, 60, 100), "brighter (+{})"),
    "lower contrast": ShiftFamily(lower_contrast, (0.8, 0.5, 0.3), "lower contrast (x{})"),
    "gaussian noise": ShiftFamily(gaussian_noise, (10, 25, 50), "gaussian noise (sd {})"),
    "blur": ShiftFamily(lambda s: box_blur(int(s)), (2, 3, 5), "blur ({0}x{0} box)"),
    "translation": ShiftFamily(lambda s: translated(int(s)), (1, 3, 5), "translated ({} px right)"),
    "rotation": ShiftFamily(rotated, (8, 15, 30), "rotated ({} degrees)"),
    "occlusion": ShiftFamily(lambda s: occluded(int(s)), (8, 12, 16), "occluded ({0}x{0} black square)"),
    "inversion": ShiftFamily(partly_inverted, (0.1, 0.2, 0.5), "inverted ({:.0%} of images)"),
    "class mix": ShiftFamily(hard_class_mix, (0.6, 0.9), "hard classes ({:.0%} of the batch)"),
}
