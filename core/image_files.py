"""Images from the files people have: PNG/JPEG, `.npy` arrays, IDX files, TFRecords of examples.

Every reader returns uint8 [n, 28, 28] pixels (0 background, 255 full ink, as in
Fashion-MNIST) or raises `InputError` naming the file and what was wrong.
Used by `fmnist predict`, `fmnist drift` and `fmnist data add`, so all three
accept and refuse the same files.

Nothing is changed silently: a picture is read only when its pixels can be
taken as they are (`PICTURE_RULE`); one that would have to be resized,
reduced from 16 bits, flattened from colour or composited from transparency
is refused, saying which. Headers are checked before anything is decoded or
allocated: a 24 KB PNG declaring 20000x20000 pixels, or a `.npy` header
declaring (1e11, 28, 28) over a few bytes, is refused from its header.
"""

from __future__ import annotations

import io
import math
import struct
import warnings

import numpy as np

from core import examples, idx
from core.errors import InputError
from core.vocabulary import IMAGE_HEIGHT, IMAGE_WIDTH, MAX_PIXEL

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")
PICTURE_RULE = (
    "28x28 pixels, 8-bit grey; RGB, RGBA or palette pictures only when every pixel's channels are equal "
    "and fully opaque (read as that grey); nothing is resized or converted"
)
# Modes PIL decodes without loss to one grey value per pixel (after the checks in `_grey`).
GREY_MODES = ("1", "L", "P", "LA", "PA", "RGB", "RGBA")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NPY_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}
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


def _png_header(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, bit depth) from a PNG's IHDR chunk, which the format puts first; None if not a PNG.

    Read before PIL sees the file: PIL opens 16-bit RGB as 8-bit RGB without
    saying so, and answers a huge declared size with a warning or an error
    about decompression bombs rather than with the size that is wrong.
    """
    if not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR" or len(data) < 25:
        return None
    return struct.unpack(">IIB", data[16:25])


def _check_size(width: int, height: int, path: str) -> None:
    if (width, height) != (IMAGE_WIDTH, IMAGE_HEIGHT):
        raise InputError(
            f"{path}: {width}x{height} pixels; expected {IMAGE_WIDTH}x{IMAGE_HEIGHT} "
            "(pictures are not resized: that would change every pixel)"
        )


def _grey(image, path: str) -> np.ndarray:
    """The picture's grey values [28, 28], refused when taking one value per pixel would lose anything."""
    if image.mode not in GREY_MODES:
        raise InputError(f"{path}: {image.mode} pixels; expected {PICTURE_RULE}")
    if image.mode == "L":
        return np.asarray(image, dtype=np.uint8)
    rgba = np.asarray(image.convert("RGBA"), dtype=np.uint8)  # palette and 1-bit expand exactly
    transparent = int(np.count_nonzero(rgba[..., 3] < MAX_PIXEL))
    if transparent:
        raise InputError(
            f"{path}: transparent ({transparent} pixels with alpha below 255); expected an opaque picture "
            "(a transparent pixel has no grey value of its own)"
        )
    coloured = int(np.count_nonzero((rgba[..., 0] != rgba[..., 1]) | (rgba[..., 1] != rgba[..., 2])))
    if coloured:
        raise InputError(
            f"{path}: a colour image ({coloured} pixels whose red, green and blue differ); expected grey "
            "(making it grey would change those pixels)"
        )
    return rgba[..., 0].copy()


def _picture(data: bytes, path: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    header = _png_header(data)
    if header is not None:
        _check_size(header[0], header[1], path)
        if header[2] == 16:
            raise InputError(
                f"{path}: 16-bit samples; expected 8-bit (reducing them to 0..255 would change the pixels)"
            )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                _check_size(*image.size, path)
                frames = getattr(image, "n_frames", 1)
                if frames > 1:
                    raise InputError(f"{path}: {frames} frames; expected one picture")
                return _grey(image, path)[None]
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        reason = str(err).rstrip(".")
        expected = f"{IMAGE_WIDTH}x{IMAGE_HEIGHT}"
        raise InputError(f"{path}: too large to decode ({reason}); expected {expected} pixels") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise InputError(f"{path}: cannot be read as a PNG/JPEG image: {err}") from err


def read_npy(data: bytes, path: str, what: str) -> np.ndarray:
    """A `.npy` array from its bytes (`what` it should hold, for messages); its header is checked first.

    `np.load` allocates what the header declares before it reads: a few
    bytes declaring (1e11, 28, 28) would ask for 71 TiB. The declared size
    must be exactly the bytes that follow the header.
    """
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        if version not in NPY_HEADER_READERS:
            raise ValueError(f"format version {version[0]}.{version[1]} is not read here")
        shape, _, dtype = NPY_HEADER_READERS[version](stream)
    except (ValueError, EOFError) as err:
        raise InputError(f"{path}: not a .npy array of {what}: {err}") from None
    declared, held = math.prod(shape) * dtype.itemsize, len(data) - stream.tell()
    if declared != held:
        raise InputError(
            f"{path}: declares shape {shape} of {dtype} ({declared} bytes), but holds {held} bytes of data "
            "(cut short, padded, or not a .npy file)"
        )
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:  # object arrays among them: never unpickled
        raise InputError(f"{path}: not a .npy array of {what}: {err}") from err


def _npy(data: bytes, path: str) -> np.ndarray:
    return pixels_from_array(read_npy(data, path, "pixels"), path)


def _idx(data: bytes, path: str) -> np.ndarray:
    raw = idx.inflate(data, path, idx.IMAGES_MAGIC) if path.lower().endswith(".gz") else data
    return idx.parse_images(raw, path)


def is_picture(path: str) -> bool:
    return path.lower().endswith(PICTURE_SUFFIXES)


def load_images(path: str) -> np.ndarray:
    """Images as uint8 [n, 28, 28] from a PNG/JPEG (as `PICTURE_RULE` says), a `.npy` array,
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
