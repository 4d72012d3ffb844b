"""IDX parsing: the real header layout and each way a file can be malformed."""

import struct

import numpy as np
import pytest

from core import idx


def images_bytes(count: int, rows: int = 28, cols: int = 28, magic: int = idx.IMAGES_MAGIC) -> bytes:
    header = struct.pack(">IIII", magic, count, rows, cols)
    return header + np.arange(count * rows * cols, dtype=np.uint64).astype(np.uint8).tobytes()


def labels_bytes(values: list[int], magic: int = idx.LABELS_MAGIC) -> bytes:
    return struct.pack(">II", magic, len(values)) + bytes(values)


def test_parses_images_and_labels():
    images = idx.parse_images(images_bytes(3), "imgs")
    labels = idx.parse_labels(labels_bytes([0, 9, 4]), "lbls")
    assert images.shape == (3, 28, 28) and images.dtype == np.uint8
    assert images[0, 0, 5] == 5
    assert labels.tolist() == [0, 9, 4]


def test_wrong_magic_names_file_and_expected_value():
    with pytest.raises(idx.IdxFormatError, match=r"imgs: magic number 0x00000801, expected 0x00000803"):
        idx.parse_images(labels_bytes([1, 2]), "imgs")


def test_wrong_image_size_is_refused():
    with pytest.raises(idx.IdxFormatError, match="images are 32x32, expected 28x28"):
        idx.parse_images(images_bytes(2, 32, 32), "imgs")


def test_wrong_dimension_count_is_refused():
    data = struct.pack(">IIIII", 0x00000804, 1, 28, 28, 1) + bytes(784)
    with pytest.raises(idx.IdxFormatError, match="magic number 0x00000804"):
        idx.parse_images(data, "imgs")


@pytest.mark.parametrize("cut", [1, 784, 10])
def test_truncated_payload_is_refused(cut: int):
    with pytest.raises(idx.IdxFormatError, match="imgs: .*truncated"):
        idx.parse_images(images_bytes(3)[:-cut], "imgs")


def test_truncated_header_is_refused():
    with pytest.raises(idx.IdxFormatError, match="too short|header truncated"):
        idx.parse_labels(labels_bytes([1])[:6], "lbls")


def test_label_out_of_range_names_index():
    with pytest.raises(idx.IdxFormatError, match=r"lbls: label 12 at index 1 is outside 0..9"):
        idx.parse_labels(labels_bytes([3, 12, 1]), "lbls")


def test_mismatched_counts_are_refused():
    with pytest.raises(idx.IdxFormatError, match="train: 3 images but 2 labels"):
        idx.check_same_count(np.zeros((3, 28, 28)), np.zeros(2), "train")
