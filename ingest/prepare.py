"""Fashion-MNIST as spans of TFRecords of `tf.train.Example`, and the gold test set: find, verify, write.

`prepare_dataset` is what `fmnist data prepare` runs. It looks for the four
official IDX files (an explicit directory, then Debian's `dataset-fashion-mnist`,
then the official mirror), checks the SHA-256 of their decompressed bytes, parses
them with `core.idx`, and writes GZIP TFRecords: the official training split
as spans `<out>/span-1/` .. `<out>/span-K/` (TFX's span convention; K=1 by
default, more to simulate data arriving day by day), and the official
10,000-image test split as `<out>/test/`, the fixed gold evaluation set that is
never trained on, so accuracy stays comparable to published figures.

Nothing is half-written: everything is written into a temporary directory
beside the output and renamed into place only when all of it is complete.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import itertools
import json
import shutil
import urllib.request
import uuid
import zlib
from pathlib import Path

import numpy as np
from tqdm import tqdm

from core import idx
from core.errors import InputError
from core.examples import write_tfrecords
from core.spans import GOLD_SPLIT_DIR, SPAN_PREFIX, span_dir, spans_on_disk
from core.vocabulary import MANIFEST_NAME, NUM_CLASSES, TFRECORD_SUFFIX
from ingest.spans import write_span

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
MIRROR_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
SPLITS = ("train", "test")


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


class DatasetError(InputError):
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


def _replace_dir(new: Path, final: Path) -> None:
    """Swap `new` into `final` with renames, so readers see the old or the new directory, never a mix."""
    old = final.with_name(f".old-{final.name}-{uuid.uuid4().hex[:8]}")
    if final.exists():
        final.rename(old)
    new.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _read_manifest(output_dir: Path) -> dict | None:
    try:
        return json.loads((output_dir / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None


def existing_manifest(
    output_dir: Path, limit: int | None, spans: int, files: dict[str, dict[str, IdxFile]]
) -> dict | None:
    """The manifest of TFRecords already written from the same files with the same limit and spans, if any.

    Rewriting identical TFRecords would give them new timestamps, and TFX would
    then re-run ImportExampleGen and everything after it; so an up-to-date
    output is kept.
    """
    manifest = _read_manifest(output_dir)
    if manifest is None:
        return None
    same_source = all(
        manifest.get("splits", {}).get(split, {}).get("source_sha256")
        == {k: f.sha256 for k, f in kinds.items()}
        for split, kinds in files.items()
    )
    complete = any((output_dir / GOLD_SPLIT_DIR).glob(f"*{TFRECORD_SUFFIX}")) and set(
        range(1, spans + 1)
    ) <= set(spans_on_disk(str(output_dir)))
    same_shape = manifest.get("limit") == limit and manifest.get("spans") == spans
    return manifest if same_source and complete and same_shape else None


def split_into_spans(
    images: np.ndarray, labels: np.ndarray, spans: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Consecutive, near-equal parts of the training split: the days on which the data "arrived"."""
    if spans > len(images):
        raise DatasetError(f"--spans {spans}: more spans than the {len(images)} training images")
    bounds = np.linspace(0, len(images), spans + 1).astype(int)
    return [(images[a:b], labels[a:b]) for a, b in itertools.pairwise(bounds)]


def prepare_dataset(
    source_dir: Path | None,
    output_dir: Path,
    limit: int | None = None,
    shards: int = 4,
    spans: int = 1,
    download_dir: Path | None = None,
    files: dict[str, dict[str, IdxFile]] = OFFICIAL_FILES,
    force: bool = False,
) -> dict:
    """Write `<output_dir>/test/` (the gold set) and `span-1/` .. `span-<spans>/`; return the manifest.

    The official training split is cut into `spans` consecutive spans (one:
    all of it), as if it had arrived over `spans` days; the official test split
    is the gold evaluation set. `limit` keeps the first N images of each split
    (a slice for tests). `files` exists so tests can hand in files with other
    checksums; the CLI always uses the official ones. Output already written
    from the same files with the same limit and spans is kept unless `force`
    (the manifest then says `"reused": true`). Spans added with `fmnist data
    add` are never deleted without `force`.
    """
    source = locate_source_dir(source_dir, download_dir or output_dir / "downloads")
    verified = {split: read_split(source, files[split]) for split in SPLITS}  # refuses wrong files first
    if not force and (current := existing_manifest(output_dir, limit, spans, files)) is not None:
        return {**current, "reused": True}
    previous = _read_manifest(output_dir) or {}
    added = sorted(set(spans_on_disk(str(output_dir))) - set(range(1, previous.get("spans", 0) + 1)))
    if added and not force:
        raise DatasetError(
            f"{output_dir}: holds spans {added} added with `fmnist data add`; preparing would replace the "
            "spans they follow. Prepare into another --data-dir, or pass --force to start over"
        )
    parsed = {split: parse_split(verified[split], split, files[split]) for split in SPLITS}
    if limit is not None:
        parsed = {split: (images[:limit], labels[:limit]) for split, (images, labels) in parsed.items()}
    output_dir.mkdir(parents=True, exist_ok=True)
    staging = output_dir / f".tmp-{uuid.uuid4().hex[:8]}"
    manifest: dict = {"source_dir": str(source), "limit": limit, "spans": spans, "splits": {}}
    try:
        test_images, test_labels = parsed["test"]
        bar = tqdm(range(len(test_images)), desc="test", unit="img", mininterval=1.0)
        write_tfrecords(test_images, test_labels, str(staging / GOLD_SPLIT_DIR), 1, bar)
        for number, (images, labels) in enumerate(split_into_spans(*parsed["train"], spans), start=1):
            write_span(str(staging), images, labels, f"official training split, part {number} of {spans}",
                       span=number, shards=shards)  # fmt: skip
        for split, (images, labels) in parsed.items():
            manifest["splits"][split] = {
                "examples": len(images),
                "class_counts": np.bincount(labels, minlength=NUM_CLASSES).tolist(),
                "source_sha256": {kind: f.sha256 for kind, f in files[split].items()},
            }
        for name in [GOLD_SPLIT_DIR, *(f"{SPAN_PREFIX}{n}" for n in range(1, spans + 1))]:
            _replace_dir(staging / name, output_dir / name)
        for stale in [n for n in spans_on_disk(str(output_dir)) if n > spans]:
            shutil.rmtree(span_dir(str(output_dir), stale), ignore_errors=True)
        shutil.rmtree(output_dir / "train", ignore_errors=True)  # the layout before spans
        (output_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest
