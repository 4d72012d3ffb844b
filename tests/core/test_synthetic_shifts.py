"""Fit-time synthetic shifts: exact effects on hand-made images."""

import numpy as np
import pytest

from core.synthetic_shifts import FIT_SHIFTS, clip_pixels, gamma, pixelated, salt_and_pepper, striped, zoomed


def gradient(n: int = 3) -> np.ndarray:
    """n images, each a left-to-right ramp of 0..243 (one grey level per column, 9 apart)."""
    return np.tile(np.arange(28, dtype=np.uint8) * 9, (n, 28, 1))


def test_clip_pixels_saturates_instead_of_wrapping():
    assert clip_pixels(np.array([-5.0, 12.7, 300.0])).tolist() == [0, 12, 255]


def test_every_fit_shift_keeps_shape_and_type_and_changes_the_images():
    images = gradient()
    for name, shift in FIT_SHIFTS.items():
        out = shift(images)
        assert out.shape == images.shape and out.dtype == np.uint8, name
        assert not np.array_equal(out, images), name


def test_pixel_shifts_do_what_they_say():
    images = gradient()
    noisy = salt_and_pepper(0.1)(images)
    changed = noisy != images
    assert 0.05 < changed.mean() < 0.15 and set(np.unique(noisy[changed])) <= {0, 255}
    assert gamma(2.0)(images)[0, 0, 17] == 91  # 153 is 0.6 of full scale; 0.36 of it is 91.8
    tiles = pixelated(4)(images)
    assert np.all(tiles[:, :, :4] == tiles[:, :, :1]) and tiles[0, 0, 0] == 13  # mean of 0, 9, 18, 27
    rows = striped(3)(images)
    assert np.all(rows[:, ::3] == 0) and np.array_equal(rows[:, 1::3], images[:, 1::3])


@pytest.mark.parametrize("scale", [0.5, 1.3])
def test_zoom_keeps_the_centre_and_moves_the_edges(scale):
    image = np.zeros((1, 28, 28), np.uint8)
    image[0, 10:18, 10:18] = 200  # a centred square
    out = zoomed(scale)(image)
    assert out[0, 13, 13] == 200
    assert (out > 100).sum() < (image > 100).sum() if scale < 1 else (out > 100).sum() > (image > 100).sum()
