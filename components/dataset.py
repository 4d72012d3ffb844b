"""Fashion-MNIST as TFRecords of `tf.train.Example`: find, verify, parse, write.

`prepare_dataset` is what `fmnist data prepare` runs. It looks for the four
official IDX files (an explicit directory, then Debian's `dataset-fashion-mnist`,
then the official mirror), checks the SHA-256 of their decompressed bytes, parses
them with `components.idx`, and writes GZIP TFRecords into `<out>/train/` and
`<out>/test/`. The official 10,000-image test set stays the evaluation split so
accuracy is comparable to published figures.

Nothing is half-written: every split is written into a temporary directory
beside the output and renamed into place only when both splits are complete.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import shutil
import urllib.request
import uuid
import zlib
from pathlib import Path

import numpy as np
from tqdm import tqdm

from components import idx
from components.features import IMAGE_HEIGHT, IMAGE_KEY, IMAGE_WIDTH, LABEL_KEY, MAX_PIXEL, PIXELS

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
MIRROR_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
SPLITS = ("train", "test")
TFRECORD_SUFFIX = ".tfrecord.gz"
MANIFEST_NAME = "manifest.json"


@dataclasses.dataclass(frozen=True)
class IdxFile:
    """One official file: its name without `.gz` and the SHA-256 of its decompressed bytes."""

    name: str
    sha256: str


OFFICIAL_FILES: dict[str, dict[str, IdxFile]] = {
    "train": {
        "images": IdxFile(
            "train-images-idx3-ubyte",
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        ),
        "labels": IdxFile(
            "train-labels-idx1-ubyte",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        ),
    },
    "test": {
        "images": IdxFile(
            "t10k-images-idx3-ubyte",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        ),
        "labels": IdxFile(
            "t10k-labels-idx1-ubyte",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ),
    },
}


class DatasetError(ValueError):
    """The source files are missing, unreadable or not the official ones."""


def _has_all_files(directory: Path) -> bool:
    return all(
        (directory / f.name).exists() or (directory / f"{f.name}.gz").exists()
        for split in OFFICIAL_FILES.values()
        for f in split.values()
    )


def download_official(download_dir: Path) -> Path:
    """Fetch the four `.gz` files from the official mirror; the checksum check comes later."""
    download_dir.mkdir(parents=True, exist_ok=True)
    for split in OFFICIAL_FILES.values():
        for f in split.values():
            target = download_dir / f"{f.name}.gz"
            if target.exists():
                continue
            partial = target.with_suffix(".gz.partial")
            url = MIRROR_URL + target.name
            try:
                with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
                    shutil.copyfileobj(response, out)
            except OSError as err:
                partial.unlink(missing_ok=True)
                raise DatasetError(f"could not download {url}: {err}") from err
            partial.rename(target)
    return download_dir


def locate_source_dir(explicit: Path | None, download_dir: Path) -> Path:
    """The directory holding the IDX files: explicit flag, then Debian's package, then a download."""
    if explicit is not None:
        if not _has_all_files(explicit):
            raise DatasetError(
                f"{explicit}: does not hold the four Fashion-MNIST IDX files "
                f"({', '.join(f.name for s in OFFICIAL_FILES.values() for f in s.values())}, "
                "optionally .gz)"
            )
        return explicit
    for candidate in (DEBIAN_DIR, download_dir):
        if _has_all_files(candidate):
            return candidate
    return download_official(download_dir)


def read_verified(directory: Path, expected: IdxFile) -> bytes:
    """The decompressed bytes of one IDX file, refused unless their SHA-256 is the expected one."""
    plain, packed = directory / expected.name, directory / f"{expected.name}.gz"
    path = packed if packed.exists() else plain
    try:
        data = gzip.decompress(path.read_bytes()) if path == packed else path.read_bytes()
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise DatasetError(f"{path}: cannot be read or decompressed: {err}") from err
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected.sha256:
        raise DatasetError(
            f"{path}: SHA-256 of the decompressed bytes is {digest}, expected {expected.sha256} "
            "(not the official Fashion-MNIST file)"
        )
    return data


def read_split(directory: Path, files: dict[str, IdxFile]) -> dict[str, bytes]:
    """The verified bytes of a split's images and labels files."""
    return {kind: read_verified(directory, f) for kind, f in files.items()}


def parse_split(
    data: dict[str, bytes], split: str, files: dict[str, IdxFile]
) -> tuple[np.ndarray, np.ndarray]:
    """Images [n, 28, 28] and labels [n] of one split, parsed from verified bytes."""
    images = idx.parse_images(data["images"], files["images"].name)
    labels = idx.parse_labels(data["labels"], files["labels"].name)
    idx.check_same_count(images, labels, split)
    return images, labels


def serialize_example(image: np.ndarray, label: int) -> bytes:
    """One `tf.train.Example`: `image` as 784 int64 pixels (0..255), `label` as int64 0..9."""
    import tensorflow as tf

    feature = {
        IMAGE_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=image.reshape(-1).tolist())),
        LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_tfrecords(images: np.ndarray, labels: np.ndarray, out_dir: Path, shards: int, desc: str) -> None:
    """Write examples round-robin into `shards` GZIP files (several files let Beam read in parallel)."""
    import tensorflow as tf

    out_dir.mkdir(parents=True)
    shards = max(1, min(shards, len(images)))
    writers = [
        tf.io.TFRecordWriter(str(out_dir / f"data-{i:05d}-of-{shards:05d}{TFRECORD_SUFFIX}"), options="GZIP")
        for i in range(shards)
    ]
    try:
        for i in tqdm(range(len(images)), desc=desc, unit="img", mininterval=1.0):
            writers[i % shards].write(serialize_example(images[i], labels[i]))
    finally:
        for writer in writers:
            writer.close()


def parse_example_pixels(serialized) -> np.ndarray:
    """The `image` pixels (int64 [n, 784], unchecked) of serialized examples of the project's format."""
    import tensorflow as tf

    spec = {IMAGE_KEY: tf.io.FixedLenFeature([PIXELS], tf.int64)}
    return tf.io.parse_example(serialized, spec)[IMAGE_KEY].numpy()


def read_example_images(files: list[Path]) -> np.ndarray:
    """The `image` of every example in TFRecord files of the project's examples (GZIP if named .gz).

    The inverse of `write_tfrecords`, for any TFRecords with the same `image` feature
    (ExampleGen's output included); errors name the file.
    """
    import tensorflow as tf

    parts = []
    for file in files:
        compression = "GZIP" if file.suffix.lower() == ".gz" else ""
        try:
            for batch in tf.data.TFRecordDataset(str(file), compression).batch(4096):
                parts.append(parse_example_pixels(batch))
        except tf.errors.OpError as err:
            raise ValueError(
                f"{file}: not TFRecords of examples with a 784-pixel 'image': {err.message}"
            ) from err
    if not parts:
        raise ValueError(f"{', '.join(map(str, files)) or 'no files'}: hold no examples")
    pixels = np.concatenate(parts)
    if pixels.min() < 0 or pixels.max() > MAX_PIXEL:
        raise ValueError(f"{files[0].parent}: pixel values outside 0..255")
    return pixels.astype(np.uint8).reshape(-1, IMAGE_HEIGHT, IMAGE_WIDTH)


def _replace_dir(new: Path, final: Path) -> None:
    """Swap `new` into `final` with renames, so readers see the old or the new split, never a mix."""
    old = final.with_name(f".old-{final.name}-{uuid.uuid4().hex[:8]}")
    if final.exists():
        final.rename(old)
    new.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def existing_manifest(
    output_dir: Path, limit: int | None, files: dict[str, dict[str, IdxFile]]
) -> dict | None:
    """The manifest of TFRecords already written from the same files with the same limit, if any.

    Rewriting identical TFRecords would give them new timestamps, and TFX would
    then re-run ImportExampleGen and everything after it; so an up-to-date
    output is kept.
    """
    try:
        manifest = json.loads((output_dir / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    same_source = all(
        manifest.get("splits", {}).get(split, {}).get("source_sha256")
        == {k: f.sha256 for k, f in kinds.items()}
        for split, kinds in files.items()
    )
    complete = all(any((output_dir / split).glob(f"*{TFRECORD_SUFFIX}")) for split in SPLITS)
    return manifest if same_source and complete and manifest.get("limit") == limit else None


def prepare_dataset(
    source_dir: Path | None,
    output_dir: Path,
    limit: int | None = None,
    shards: int = 4,
    download_dir: Path | None = None,
    files: dict[str, dict[str, IdxFile]] = OFFICIAL_FILES,
    force: bool = False,
) -> dict:
    """Write `<output_dir>/{train,test}/*.tfrecord.gz` and a manifest; return the manifest.

    `limit` keeps the first N images of each split (a slice for tests). `files`
    exists so tests can hand in files with other checksums; the CLI always uses
    the official ones. TFRecords already written from the same files with the
    same limit are kept unless `force` (the manifest then says `"reused": true`).
    """
    source = locate_source_dir(source_dir, download_dir or output_dir / "downloads")
    verified = {split: read_split(source, files[split]) for split in SPLITS}  # refuses wrong files first
    if not force and (current := existing_manifest(output_dir, limit, files)) is not None:
        return {**current, "reused": True}
    output_dir.mkdir(parents=True, exist_ok=True)
    staging = output_dir / f".tmp-{uuid.uuid4().hex[:8]}"
    manifest: dict = {"source_dir": str(source), "limit": limit, "splits": {}}
    try:
        for split in SPLITS:
            images, labels = parse_split(verified[split], split, files[split])
            if limit is not None:
                images, labels = images[:limit], labels[:limit]
            write_tfrecords(images, labels, staging / split, shards if split == "train" else 1, split)
            manifest["splits"][split] = {
                "examples": len(images),
                "class_counts": np.bincount(labels, minlength=10).tolist(),
                "source_sha256": {kind: f.sha256 for kind, f in files[split].items()},
            }
        for split in SPLITS:
            _replace_dir(staging / split, output_dir / split)
        (output_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest
