"""Data preparation on the real files: TFRecords written right, bad sources refused, nothing half-written."""

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from core.idx import IdxFormatError
from core.vocabulary import IMAGE_KEY, LABEL_KEY, PIXELS
from ingest.prepare import OFFICIAL_FILES, DatasetError, IdxFile, prepare_dataset
from tests.core.test_idx import images_bytes, labels_bytes


def read_examples(directory: Path) -> list[tf.train.Example]:
    files = sorted(str(p) for p in directory.glob("*.tfrecord.gz"))
    return [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(files, "GZIP")]


def leftovers(out: Path) -> list[str]:
    """Anything a failed run could have left: split dirs, staging dirs, TFRecords."""
    return sorted(p.name for p in out.rglob("*") if p.name != "downloads") if out.exists() else []


def test_slice_has_the_official_first_images(slice_data: Path, official_dir: Path):
    manifest = json.loads((slice_data / "manifest.json").read_text())
    assert manifest["splits"]["train"]["examples"] == 300
    assert sum(manifest["splits"]["test"]["class_counts"]) == 300

    examples = read_examples(slice_data / "test")
    assert len(examples) == 300
    with gzip.open(official_dir / "t10k-images-idx3-ubyte.gz") as f:
        first_image = np.frombuffer(f.read()[16 : 16 + PIXELS], np.uint8)
    first = examples[0].features.feature
    assert list(first[IMAGE_KEY].int64_list.value) == first_image.tolist()
    assert list(first[LABEL_KEY].int64_list.value) == [9]  # the first test image is an ankle boot
    span_files = sorted(p.name for p in (slice_data / "span-1").iterdir())
    assert span_files == [*(f"data-{i:05d}-of-00004.tfrecord.gz" for i in range(4)), "manifest.json"]
    first_span, second_span = (
        json.loads((slice_data / f"span-{n}" / "manifest.json").read_text()) for n in (1, 2)
    )
    assert (first_span["examples"], second_span["examples"]) == (150, 150)
    assert first_span["source"] == "official training split, part 1 of 2"
    for name, digest in first_span["files"].items():  # the manifest's checksums are the files'
        assert hashlib.sha256((slice_data / "span-1" / name).read_bytes()).hexdigest() == digest


def test_wrong_checksum_names_file_and_keeps_previous_output(source_copy: Path, tmp_path: Path):
    out = tmp_path / "data"
    prepare_dataset(source_copy, out, limit=20)
    before = {p: p.read_bytes() for p in out.rglob("*.tfrecord.gz")}

    labels = source_copy / "t10k-labels-idx1-ubyte"
    data = bytearray(labels.read_bytes())
    data[-1] = (data[-1] + 1) % 10  # still a valid label, but not the official file
    labels.write_bytes(bytes(data))
    expected = OFFICIAL_FILES["test"]["labels"].sha256
    with pytest.raises(DatasetError, match=rf"t10k-labels-idx1-ubyte: SHA-256 .* expected {expected}"):
        prepare_dataset(source_copy, out, limit=20)
    assert {p: p.read_bytes() for p in out.rglob("*.tfrecord.gz")} == before
    assert not list(out.glob(".tmp-*"))


def custom_source(directory: Path, train_images: bytes, train_labels: bytes) -> dict[str, dict[str, IdxFile]]:
    """Write a train split with the given bytes (and a valid tiny test split); return matching checksums."""
    directory.mkdir(exist_ok=True)
    contents = {
        ("train", "images"): train_images,
        ("train", "labels"): train_labels,
        ("test", "images"): images_bytes(2),
        ("test", "labels"): labels_bytes([1, 2]),
    }
    files: dict[str, dict[str, IdxFile]] = {"train": {}, "test": {}}
    for (split, kind), data in contents.items():
        name = OFFICIAL_FILES[split][kind].name
        (directory / f"{name}.gz").write_bytes(gzip.compress(data))
        files[split][kind] = IdxFile(name, hashlib.sha256(data).hexdigest())
    return files


@pytest.mark.parametrize(
    ("train_images", "train_labels", "message"),
    [
        (labels_bytes([1, 2]), labels_bytes([1, 2]), "train-images-idx3-ubyte: magic number"),
        (images_bytes(3)[:-100], labels_bytes([1, 2, 3]), "train-images-idx3-ubyte: payload .*truncated"),
        (images_bytes(3), labels_bytes([1, 2]), "train: 3 images but 2 labels"),
        (images_bytes(2), labels_bytes([1, 10]), "train-labels-idx1-ubyte: label 10 at index 1"),
    ],
    ids=["wrong-magic", "truncated", "count-mismatch", "label-range"],
)
def test_malformed_idx_writes_nothing(tmp_path: Path, train_images: bytes, train_labels: bytes, message: str):
    files = custom_source(tmp_path / "src", train_images, train_labels)
    out = tmp_path / "data"
    with pytest.raises(IdxFormatError, match=message):
        prepare_dataset(tmp_path / "src", out, files=files)
    assert leftovers(out) == []


def test_unreadable_gzip_names_file(tmp_path: Path):
    files = custom_source(tmp_path / "src", images_bytes(2), labels_bytes([1, 2]))
    (tmp_path / "src" / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b\x08garbage")
    with pytest.raises(DatasetError, match="train-labels-idx1-ubyte.gz: cannot be read or decompressed"):
        prepare_dataset(tmp_path / "src", tmp_path / "data", files=files)
    assert leftovers(tmp_path / "data") == []


def test_directory_without_the_files_is_refused(tmp_path: Path):
    with pytest.raises(DatasetError, match=rf"{tmp_path}: does not hold the four Fashion-MNIST IDX files"):
        prepare_dataset(tmp_path, tmp_path / "data")


def test_up_to_date_output_is_kept_and_force_rewrites_it(source_copy: Path, tmp_path: Path):
    out = tmp_path / "data"
    prepare_dataset(source_copy, out, limit=20)
    first = {p: p.stat().st_mtime_ns for p in out.rglob("*.tfrecord.gz")}
    again = prepare_dataset(source_copy, out, limit=20)
    assert again["reused"] is True
    assert {
        p: p.stat().st_mtime_ns for p in out.rglob("*.tfrecord.gz")
    } == first  # ImportExampleGen stays cached
    other_limit = prepare_dataset(source_copy, out, limit=30)
    assert "reused" not in other_limit and other_limit["splits"]["test"]["examples"] == 30
    forced = prepare_dataset(source_copy, out, limit=30, force=True)
    assert "reused" not in forced


def test_spans_cut_the_training_split_in_order_and_a_new_span_count_replaces_them(
    source_copy: Path, tmp_path: Path
):
    out = tmp_path / "data"
    prepare_dataset(source_copy, out, limit=30, spans=3)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "span-1", "span-2", "span-3", "test"]
    labels = [
        example.features.feature[LABEL_KEY].int64_list.value[0]
        for n in (1, 2, 3)
        for example in read_span_in_order(out / f"span-{n}")
    ]
    official = np.frombuffer((source_copy / "train-labels-idx1-ubyte").read_bytes()[8:38], np.uint8)
    assert sorted(labels) == sorted(official.tolist())
    prepare_dataset(source_copy, out, limit=30, spans=2)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "span-1", "span-2", "test"]


def read_span_in_order(directory: Path) -> list[tf.train.Example]:
    return read_examples(directory)


def test_spans_added_since_are_not_deleted_without_force(source_copy: Path, tmp_path: Path):
    from ingest.spans import write_span

    out = tmp_path / "data"
    prepare_dataset(source_copy, out, limit=20, spans=2)
    write_span(str(out), np.zeros((3, 28, 28), np.uint8), np.array([1, 2, 3]), "added by hand")
    with pytest.raises(DatasetError, match=r"holds spans \[3\] added with `fmnist data add`"):
        prepare_dataset(source_copy, out, limit=20, spans=3)
    assert (out / "span-3" / "manifest.json").exists()
    prepare_dataset(source_copy, out, limit=20, spans=3, force=True)
    assert json.loads((out / "span-3" / "manifest.json").read_text())["source"].startswith("official")
