"""Images from the files people have: PNG/JPEG, `.npy` arrays, IDX files, TFRecords of examples.

Every reader returns uint8 [n, 28, 28] pixels (0 background, 255 full ink, as in
Fashion-MNIST) or raises `InputError` naming the file and what was expected.
Used by `fmnist predict`, `fmnist drift` and `fmnist data add`.
"""

from __future__ import annotations

import gzip
import io
import zlib

import numpy as np

from core import examples, idx
from core.errors import InputError
from core.vocabulary import IMAGE_HEIGHT, IMAGE_WIDTH, MAX_PIXEL

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")
FLOAT_HINT = (
    "float pixels must be whole numbers in 0..255 (an array scaled to [0, 1] is 255 times too dark: "
    "pass np.rint(images * 255))"
)


def read_bytes(path: str) -> bytes:
    """A file's bytes through TensorFlow's filesystems (local, gs://, ...); InputError if unreadable."""
    import tensorflow as tf

    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            return f.read()
    except tf.errors.NotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (tf.errors.OpError, OSError) as err:
        raise InputError(f"{path}: cannot be read: {err}") from err


def require_file(path: str) -> None:
    """InputError naming `path` unless it is an existing file."""
    import tensorflow as tf

    if not tf.io.gfile.exists(path) or tf.io.gfile.isdir(path):
        raise InputError(f"{path}: no such file")


def pixels_from_array(array: np.ndarray, source: str) -> np.ndarray:
    """uint8 [n, 28, 28] from an array of pixel values; refuses what would be silently misread.

    Accepted: unsigned or signed integers and floats whose values are whole
    numbers in 0..255, shaped [n, 28, 28] or [28, 28]. Refused: booleans,
    complex numbers, strings and objects, NaN or infinite values, fractional
    floats (most often an array scaled to [0, 1]) and values outside 0..255.
    """
    if array.ndim not in (2, 3) or array.shape[-2:] != (IMAGE_HEIGHT, IMAGE_WIDTH):
        raise InputError(f"{source}: array of shape {list(array.shape)}; expected [n, 28, 28] or [28, 28]")
    if array.size == 0:
        raise InputError(f"{source}: holds no images")
    kind = array.dtype.kind
    if kind not in "uif":
        raise InputError(
            f"{source}: pixels of dtype {array.dtype}; expected uint8, integers or floats in 0..255"
        )
    if kind == "f":
        if not np.all(np.isfinite(array)):
            raise InputError(f"{source}: pixels include NaN or infinite values")
        if not np.all(array == np.round(array)):
            raise InputError(f"{source}: {FLOAT_HINT}")
    if array.min() < 0 or array.max() > MAX_PIXEL:
        raise InputError(
            f"{source}: pixel values from {array.min()} to {array.max()}; expected 0..{MAX_PIXEL}"
        )
    return array.astype(np.uint8).reshape(-1, IMAGE_HEIGHT, IMAGE_WIDTH)


def _picture(data: bytes, path: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            grey = image.convert("L").resize((IMAGE_WIDTH, IMAGE_HEIGHT))
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise InputError(f"{path}: cannot be read as a PNG/JPEG image: {err}") from err
    return np.asarray(grey, dtype=np.uint8)[None]


def _npy(data: bytes, path: str) -> np.ndarray:
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise InputError(f"{path}: not a .npy array of pixels: {err}") from err
    return pixels_from_array(array, path)


def _idx(data: bytes, path: str) -> np.ndarray:
    try:
        raw = gzip.decompress(data) if path.lower().endswith(".gz") else data
    except (OSError, EOFError, zlib.error) as err:
        raise InputError(f"{path}: cannot be read as gzip-compressed IDX images: {err}") from err
    return idx.parse_images(raw, path)


def is_picture(path: str) -> bool:
    return path.lower().endswith(PICTURE_SUFFIXES)


def load_images(path: str) -> np.ndarray:
    """Images as uint8 [n, 28, 28] from a PNG/JPEG (greyscaled, resized to 28x28), a `.npy` array,
    TFRecords of the project's examples (`.tfrecord`, `.tfrecord.gz`) or an IDX images file (.gz or not)."""
    name = path.lower()
    if ".tfrecord" in name:
        require_file(path)
        return examples.read_example_images([path])
    data = read_bytes(path)
    if is_picture(path):
        return _picture(data, path)
    if name.endswith(".npy"):
        return _npy(data, path)
    return _idx(data, path)
