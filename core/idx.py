"""Parse the IDX files Fashion-MNIST ships in, refusing anything malformed.

The format (http://yann.lecun.com/exdb/mnist/) is a big-endian header: two zero
bytes, a type code (0x08 = unsigned byte), the number of dimensions, one uint32
per dimension, then the payload. Parsing it here (instead of trusting a
third-party loader) lets every error name the file and the field at fault.

A gzip-compressed file is inflated no further than its header declares
(`inflate`): a few hundred KB of gzip can hold gigabytes of zeros behind a
header that declares one image.
"""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np

from core.errors import InputError
from core.vocabulary import IMAGE_HEIGHT, IMAGE_WIDTH, NUM_CLASSES

IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions (count, rows, cols)
LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension (count)


class IdxFormatError(InputError):
    """An IDX file is not what Fashion-MNIST ships; the message names file and field."""


def _header_size(data: bytes, name: str, expected_magic: int) -> int:
    """The header's length in bytes, from its magic number (which must be `expected_magic`)."""
    if len(data) < 4:
        raise IdxFormatError(f"{name}: {len(data)} bytes is too short for an IDX header")
    (magic,) = struct.unpack(">I", data[:4])
    if magic != expected_magic:
        raise IdxFormatError(
            f"{name}: magic number 0x{magic:08x}, expected 0x{expected_magic:08x} "
            f"(unsigned bytes, {expected_magic & 0xFF} dimension(s))"
        )
    return 4 + 4 * (magic & 0xFF)


def _inflated(inflater, pending: bytes, size: int) -> tuple[bytes, bytes]:
    """Up to `size` more decompressed bytes, and the compressed input not yet used."""
    out = b""
    while len(out) < size and pending and not inflater.eof:
        chunk = inflater.decompress(pending, size - len(out))
        if not chunk and inflater.unconsumed_tail == pending:
            break  # no progress: the stream wants input it does not have
        out, pending = out + chunk, inflater.unconsumed_tail
    return out, pending


def inflate(data: bytes, name: str, expected_magic: int) -> bytes:
    """The decompressed bytes of a gzip-compressed IDX file, inflated no further than its header declares.

    The header comes first in the stream and gives the payload's exact length;
    a stream that holds more is refused before the excess is inflated.
    """
    inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)  # gzip framing
    try:
        header, pending = _inflated(inflater, data, 4)
        rest, pending = _inflated(inflater, pending, _header_size(header, name, expected_magic) - 4)
        header += rest
        dims = struct.unpack(f">{len(rest) // 4}I", rest[: len(rest) // 4 * 4])
        size = math.prod(dims)
        payload, _ = _inflated(inflater, pending, size + 1)
    except zlib.error as err:
        raise IdxFormatError(f"{name}: cannot be read as gzip-compressed IDX: {err}") from None
    if len(payload) > size:
        raise IdxFormatError(
            f"{name}: inflates to more than its header declares (dimensions {dims}: {size} bytes); "
            "not an IDX file, or a decompression bomb"
        )
    return header + payload


def _parse(data: bytes, name: str, expected_magic: int) -> np.ndarray:
    header_size = _header_size(data, name, expected_magic)
    ndim = (header_size - 4) // 4
    if len(data) < header_size:
        raise IdxFormatError(f"{name}: header truncated ({len(data)} of {header_size} bytes)")
    dims = struct.unpack(f">{ndim}I", data[4:header_size])
    expected_size = header_size + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected_size:
        raise IdxFormatError(
            f"{name}: payload is {len(data) - header_size} bytes, dimensions {dims} "
            f"need {expected_size - header_size} (truncated or padded file)"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(dims)


def parse_images(data: bytes, name: str) -> np.ndarray:
    """Return a uint8 array [count, 28, 28] from an images IDX file's bytes."""
    images = _parse(data, name, IMAGES_MAGIC)
    if images.shape[1:] != (IMAGE_HEIGHT, IMAGE_WIDTH):
        raise IdxFormatError(
            f"{name}: images are {images.shape[1]}x{images.shape[2]}, "
            f"expected {IMAGE_HEIGHT}x{IMAGE_WIDTH}"
        )
    return images


def parse_labels(data: bytes, name: str) -> np.ndarray:
    """Return a uint8 array [count] of class ids from a labels IDX file's bytes."""
    labels = _parse(data, name, LABELS_MAGIC)
    bad = np.flatnonzero(labels >= NUM_CLASSES)
    if bad.size:
        raise IdxFormatError(
            f"{name}: label {int(labels[bad[0]])} at index {int(bad[0])} is outside "
            f"0..{NUM_CLASSES - 1} ({bad.size} such labels)"
        )
    return labels


def check_same_count(images: np.ndarray, labels: np.ndarray, split: str) -> None:
    """Images and labels pair up one to one; a mismatch means a wrong or damaged file."""
    if len(images) != len(labels):
        raise IdxFormatError(
            f"{split}: {len(images)} images but {len(labels)} labels; the files do not belong together"
        )
