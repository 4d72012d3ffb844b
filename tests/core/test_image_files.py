"""Images from files people have: every reader gives uint8 [n, 28, 28] or a clear error (exit code 2)."""

import io
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


def png_bytes(width: int, height: int, depth: int = 8, colour: int = 0, raw: bytes | None = None) -> bytes:
    """A PNG written by hand: what PIL will not write (16-bit RGB), or a header claiming far more
    pixels than its few bytes of data hold (a decompression bomb). `colour` is PNG's colour type."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    row = b"\x00" + bytes(width * channels * depth // 8)  # filter byte, then samples
    raw = raw if raw is not None else row * min(height, 16)
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def saved(image, path: Path, **options) -> Path:
    image.save(path, **options)
    return path


def rgb16_png(path: Path) -> Path:
    """28x28 16-bit RGB, equal channels: 32768 and 65535, which an 8-bit reduction makes both 255."""
    import struct

    row = b"\x00" + b"".join(struct.pack(">HHH", v, v, v) for v in [32768, 65535] * 14)
    path.write_bytes(png_bytes(28, 28, depth=16, colour=2, raw=row * 28))
    return path


def jpeg_claiming(path: Path, width: int, height: int) -> Path:
    """A 28x28 grey JPEG whose frame header (SOF0) is made to declare `width` x `height`."""
    import struct

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (28, 28), 9).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")  # marker, length (2), precision (1), height (2), width (2)
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))
    return path


def picture_cases():
    """(name, writer of a picture into a directory, what the refusal says) for every lossy conversion."""
    from PIL import Image

    grey = np.full((28, 28), 200, np.uint8)
    rgba = np.dstack([grey, grey, grey, np.zeros_like(grey)])  # fully transparent
    colour = np.dstack([grey, grey // 2, grey])
    return [
        ("1x1", lambda d: saved(Image.new("L", (1, 1), 9), d / "tiny.png"), "1x1 pixels; expected 28x28"),
        ("64x64", lambda d: saved(Image.new("L", (64, 64), 9), d / "big.png"), "64x64 pixels"),
        ("10x4000", lambda d: saved(Image.new("L", (10, 4000), 9), d / "tall.png"), "10x4000 pixels"),
        ("16-bit grey", lambda d: saved(Image.fromarray(np.full((28, 28), 32768, np.uint16)), d / "g16.png"),
         "16-bit samples"),
        ("16-bit RGB", lambda d: rgb16_png(d / "rgb16.png"), "16-bit samples"),
        ("transparent", lambda d: saved(Image.fromarray(rgba, "RGBA"), d / "clear.png"),
         "transparent (784 pixels with alpha below 255)"),
        ("half-transparent grey", lambda d: saved(Image.fromarray(grey).convert("LA").point(
            lambda v: v // 2), d / "la.png"), "transparent"),
        ("colour", lambda d: saved(Image.fromarray(colour, "RGB"), d / "colour.png"),
         "a colour image (784 pixels whose red, green and blue differ)"),
        ("colour JPEG", lambda d: saved(Image.fromarray(colour, "RGB"), d / "colour.jpg", quality=100),
         "a colour image"),
        ("CMYK JPEG", lambda d: saved(Image.new("CMYK", (28, 28)), d / "print.jpg"), "CMYK pixels"),
        ("animated", lambda d: saved(Image.new("L", (28, 28), 1), d / "anim.png", save_all=True,
                                     append_images=[Image.new("L", (28, 28))]),
         "2 frames; expected one picture"),
        ("bomb", lambda d: (d / "bomb.png").write_bytes(png_bytes(20000, 20000)) and d / "bomb.png",
         "20000x20000 pixels"),
        ("large", lambda d: (d / "large.png").write_bytes(png_bytes(10000, 10000)) and d / "large.png",
         "10000x10000 pixels"),
        ("JPEG bomb", lambda d: jpeg_claiming(d / "bomb.jpg", 20000, 20000), "too large to decode"),
        ("large JPEG", lambda d: jpeg_claiming(d / "large.jpg", 10000, 10000), "too large to decode"),
        ("64x64 JPEG", lambda d: jpeg_claiming(d / "big.jpg", 64, 64), "64x64 pixels; expected 28x28"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("write", "message"), [c[1:] for c in picture_cases()], ids=[c[0] for c in picture_cases()]
)
def test_pictures_are_never_resized_reduced_or_flattened_but_refused(tmp_path: Path, write, message: str):
    path = write(tmp_path)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")) as failure:
        load_images(str(path))
    assert str(failure.value).startswith(f"{path}: ")


def test_the_bomb_is_small_and_refused_from_its_header(tmp_path: Path):
    (tmp_path / "bomb.png").write_bytes(png_bytes(20000, 20000))
    assert (tmp_path / "bomb.png").stat().st_size < 25_000  # 400 million pixels claimed
    with pytest.raises(InputError, match="expected 28x28"):
        load_images(str(tmp_path / "bomb.png"))


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA", "P", "1"])
def test_grey_pictures_in_every_lossless_encoding_give_their_exact_pixels(tmp_path: Path, images, mode):
    from PIL import Image

    grey = Image.fromarray(images[0])
    if mode == "P":  # a palette of the 256 greys: indices are the grey values
        picture = Image.frombytes("P", grey.size, grey.tobytes())
        picture.putpalette([v for i in range(256) for v in (i, i, i)])
        expected = images[:1]
    elif mode == "1":  # one bit per pixel: 0 or full ink, as PNG defines it
        picture = grey.point(lambda v: 255 if v > 127 else 0).convert("1")
        expected = np.where(images[:1] > 127, 255, 0).astype(np.uint8)
    else:
        picture, expected = grey.convert(mode), images[:1]  # grey in every channel, fully opaque
    picture.save(tmp_path / "x.png")
    np.testing.assert_array_equal(load_images(str(tmp_path / "x.png")), expected)


def test_a_grey_jpeg_is_read_as_it_decodes(tmp_path: Path, images):
    from PIL import Image

    Image.fromarray(images[0]).save(tmp_path / "x.jpg", quality=95)
    pixels = load_images(str(tmp_path / "x.jpg"))
    assert pixels.shape == (1, 28, 28) and np.abs(pixels.astype(int) - images[:1]).mean() < 8


def npy_claiming(
    path: Path, shape: tuple[int, ...], dtype: str = "|u1", payload: bytes = b"\x00" * 784
) -> Path:
    """A .npy file whose header declares `shape` over only `payload` bytes of data."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": dtype, "fortran_order": False, "shape": shape})
        f.write(payload)
    return path


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((10**11, 28, 28), r"declares shape \(100000000000, 28, 28\) of uint8 \(78400000000000 bytes\)"),
        ((2, 28, 28), r"declares shape \(2, 28, 28\) of uint8 \(1568 bytes\)"),  # cut short
    ],
)
def test_a_npy_header_is_checked_against_the_file_before_anything_is_allocated(
    tmp_path: Path, shape, message: str
):
    path = npy_claiming(tmp_path / "x.npy", shape)
    with pytest.raises(InputError, match=message) as failure:
        load_images(str(path))
    assert str(failure.value).startswith(f"{path}: ")


def test_a_gzip_idx_file_is_never_inflated_beyond_what_its_header_declares(tmp_path: Path):
    import gzip
    import tracemalloc

    from tests.core.test_idx import images_bytes

    bomb = tmp_path / "bomb-idx3-ubyte.gz"
    bomb.write_bytes(
        gzip.compress(images_bytes(1) + bytes(100 * 2**20), compresslevel=9)
    )  # one image, 100 MB
    assert bomb.stat().st_size < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="inflates to more than its header declares"):
            load_images(str(bomb))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 * 2**20  # was the whole 100 MB, then a "padded file" error
