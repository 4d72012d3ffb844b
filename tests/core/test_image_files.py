"""Images from files people have: every reader gives uint8 [n, 28, 28] or a clear error (exit code 2)."""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from core.errors import InputError
from core.image_files import load_images, pixels_from_array


@pytest.fixture(scope="module")
def images(slice_data: Path) -> np.ndarray:
    files = sorted(str(p) for p in (slice_data / "test").glob("*.tfrecord.gz"))
    serialized = [r.numpy() for r in tf.data.TFRecordDataset(files, "GZIP").take(8)]
    parsed = tf.io.parse_example(serialized, {"image": tf.io.FixedLenFeature([784], tf.int64)})
    return parsed["image"].numpy().reshape(-1, 28, 28).astype(np.uint8)


def test_png_npy_tfrecords_and_idx_give_the_same_pixels(
    tmp_path: Path, official_dir: Path, slice_data: Path, images: np.ndarray
):
    from PIL import Image

    Image.fromarray(images[0]).save(tmp_path / "one.png")
    np.save(tmp_path / "batch.npy", images)
    np.testing.assert_array_equal(load_images(str(tmp_path / "one.png")), images[:1])
    np.testing.assert_array_equal(load_images(str(tmp_path / "batch.npy")), images)
    idx_images = load_images(str(official_dir / "t10k-images-idx3-ubyte.gz"))
    assert idx_images.shape == (10000, 28, 28)
    np.testing.assert_array_equal(idx_images[:8], images)
    from_tfrecords = load_images(str(next((slice_data / "test").glob("*.tfrecord.gz"))))
    assert from_tfrecords.shape == (300, 28, 28)
    np.testing.assert_array_equal(from_tfrecords[:8], images)


def test_unreadable_files_name_the_file(tmp_path: Path):
    (tmp_path / "garbage.tfrecord").write_bytes(b"not a record")
    with pytest.raises(InputError, match="garbage.tfrecord: not TFRecords of examples"):
        load_images(str(tmp_path / "garbage.tfrecord"))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "broken-idx3-ubyte.gz").write_bytes(b"\x1f\x8b\x08garbage")
    for name in ("broken.png", "broken-idx3-ubyte.gz"):
        with pytest.raises(InputError, match=f"{name}: cannot be read as"):
            load_images(str(tmp_path / name))
    with pytest.raises(InputError, match="missing.npy: no such file"):
        load_images(str(tmp_path / "missing.npy"))
    np.save(tmp_path / "bad.npy", np.zeros((2, 32, 32)))
    with pytest.raises(InputError, match="bad.npy: array of shape"):
        load_images(str(tmp_path / "bad.npy"))


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.full((2, 28, 28), 200, np.uint8), 200),
        (np.full((2, 28, 28), 200, np.int64), 200),
        (np.full((2, 28, 28), 200.0, np.float32), 200),  # whole-number floats in 0..255
        (np.full((28, 28), 7, np.uint16), 7),  # one image without its batch axis
    ],
)
def test_integer_and_whole_float_pixels_in_range_are_accepted(array: np.ndarray, expected: int):
    pixels = pixels_from_array(array, "x.npy")
    assert pixels.dtype == np.uint8 and pixels.shape[1:] == (28, 28) and pixels.max() == expected


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.full((2, 28, 28), 0.5, np.float32), "scaled to [0, 1] is 255 times too dark"),
        (np.full((2, 28, 28), np.nan, np.float32), "NaN or infinite"),
        (np.ones((2, 28, 28), bool), "dtype bool"),
        (np.ones((2, 28, 28), np.complex64), "dtype complex64"),
        (np.full((2, 28, 28), "a"), "dtype <U1"),
        (np.full((2, 28, 28), 256, np.int32), "pixel values from 256 to 256; expected 0..255"),
        (np.full((2, 28, 28), -1, np.int32), "expected 0..255"),
        (np.zeros((0, 28, 28), np.uint8), "holds no images"),
    ],
)
def test_arrays_that_would_be_misread_are_refused(tmp_path: Path, array: np.ndarray, message: str):
    np.save(tmp_path / "x.npy", array)
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")) as failure:
        load_images(str(tmp_path / "x.npy"))
    assert str(tmp_path / "x.npy") in str(failure.value)
