"""Image-level features: exact values on hand-made images."""

import numpy as np
import pytest

from core.image_features import FEATURE_NAMES, image_features


def test_a_blank_and_a_white_image():
    images = np.stack([np.zeros((28, 28), np.uint8), np.full((28, 28), 255, np.uint8)])
    f = image_features(images)
    assert set(f) == set(FEATURE_NAMES) and all(v.shape == (2,) for v in f.values())
    assert f["mean_intensity"].tolist() == [0.0, 1.0] and f["ink_fraction"].tolist() == [0.0, 1.0]
    assert f["contrast"].tolist() == [0.0, 0.0] and f["sharpness"].tolist() == [0.0, 0.0]
    assert f["center_row"][0] == 0.5 and f["center_col"][1] == pytest.approx(0.5)
    assert (f["bbox_top"][1], f["bbox_bottom"][1], f["bbox_left"][1], f["bbox_right"][1]) == (0, 1, 0, 1)
    assert f["grid_00"].tolist() == [0.0, 1.0]


def test_one_bright_pixel_places_the_centre_box_and_grid():
    image = np.zeros((1, 28, 28), np.uint8)
    image[0, 27, 0] = 255  # bottom-left corner
    f = image_features(image)
    assert f["center_row"][0] == pytest.approx(1.0) and f["center_col"][0] == pytest.approx(0.0)
    assert f["bbox_top"][0] == pytest.approx(1.0) and f["bbox_right"][0] == pytest.approx(0.0)
    assert f["grid_30"][0] == pytest.approx(1 / 49) and f["grid_03"][0] == 0.0


def test_wrong_shapes_are_refused():
    with pytest.raises(ValueError, match=r"images must be \[n, 28, 28\], got \[2, 784\]"):
        image_features(np.zeros((2, 784), np.uint8))
