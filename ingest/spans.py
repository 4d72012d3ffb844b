"""Writing one span of labelled examples: checked, complete or absent, with a checksummed manifest.

Every way data enters (`fmnist data prepare --spans K`, `fmnist data add`)
ends here. The span is written under a hidden staging name beside the others
and renamed into place only when every file and the manifest are written, so
ImportExampleGen (which reads `span-{SPAN}/*.tfrecord.gz`) never sees part of
a span, and a bad input leaves nothing behind.

The same examples are not written twice by accident: the manifest records a
fingerprint of the examples as a set (`examples_sha256`: the order they came
in does not matter), and a span whose examples an earlier span holds already
is refused naming that span, unless `allow_duplicate` (spans written before
the fingerprint existed are compared by their files' SHA-256s). Spans from
request logs also record the image ids they took (`request_ids`), so a sheet
of labels that grows is added one new row at a time (`ingest.sources`).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from core.errors import InputError
from core.examples import write_tfrecords
from core.spans import span_dir, spans_on_disk
from core.vocabulary import IMAGE_HEIGHT, IMAGE_WIDTH, MANIFEST_NAME, NUM_CLASSES


@dataclasses.dataclass(frozen=True)
class SpanManifest:
    """What a span holds and where it came from; `files` maps each TFRecord file to its SHA-256."""

    span: int
    source: str
    examples: int
    class_counts: list[int]
    files: dict[str, str]
    written: str
    examples_sha256: str = ""
    request_ids: list[str] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_labelled(images: np.ndarray, labels: np.ndarray, source: str) -> None:
    """Refuse examples that are not uint8 [n, 28, 28] images with one label 0..9 each, naming `source`."""
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (IMAGE_HEIGHT, IMAGE_WIDTH):
        raise InputError(
            f"{source}: images must be uint8 [n, 28, 28], got {images.dtype} {list(images.shape)}"
        )
    if len(images) == 0:
        raise InputError(f"{source}: holds no images")
    if labels.ndim != 1 or len(labels) != len(images):
        raise InputError(f"{source}: {len(images)} images but {labels.size} labels")
    if labels.dtype.kind not in "iu":
        raise InputError(f"{source}: labels must be whole numbers 0..9, got {labels.dtype}")
    bad = np.flatnonzero((labels < 0) | (labels >= NUM_CLASSES))
    if bad.size:
        raise InputError(
            f"{source}: label {int(labels[bad[0]])} at index {int(bad[0])} is outside 0..{NUM_CLASSES - 1} "
            f"({bad.size} such labels)"
        )


class DuplicateSpanError(InputError):
    """The examples are in an earlier span already; the message names it."""


def examples_sha256(images: np.ndarray, labels: np.ndarray) -> str:
    """SHA-256 of the examples as a set: each (image, label) hashed, the digests sorted, then hashed."""
    rows = np.concatenate(
        [images.reshape(len(images), -1), labels.astype("<i8").view(np.uint8).reshape(len(labels), -1)],
        axis=1,
    )
    return hashlib.sha256(
        b"".join(sorted(hashlib.sha256(row.tobytes()).digest() for row in rows))
    ).hexdigest()


def span_manifests(data_dir: str) -> dict[int, dict[str, Any]]:
    """The manifest of every span on disk; a span whose manifest cannot be read is left out."""
    found = {}
    for span in spans_on_disk(data_dir):
        try:
            with open(os.path.join(span_dir(data_dir, span), MANIFEST_NAME)) as f:
                found[span] = json.load(f)
        except (OSError, ValueError):
            continue
    return found


def request_ids_in_spans(data_dir: str) -> dict[str, int]:
    """Logged image id -> the span that took it, for every span written from request logs."""
    return {
        image_id: span
        for span, manifest in span_manifests(data_dir).items()
        for image_id in manifest.get("request_ids") or ()
    }


def _same_examples(data_dir: str, digest: str, files: dict[str, str] | None = None) -> int | None:
    """The earlier span with these examples: the same fingerprint, or (for a span written before
    fingerprints) the same files' SHA-256s when `files` is given."""
    for span, manifest in span_manifests(data_dir).items():
        recorded = manifest.get("examples_sha256")
        earlier_files = sorted((manifest.get("files") or {}).values())
        if recorded == digest or (files and not recorded and earlier_files == sorted(files.values())):
            return span
    return None


def _refuse_duplicate(data_dir: str, span: int | None, source: str, examples: int) -> None:
    if span is not None:
        raise DuplicateSpanError(
            f"{source}: span {span} ({span_dir(data_dir, span)}) holds these {examples} examples already; "
            "nothing written (pass --allow-duplicate to add them again)"
        )


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_span(
    data_dir: str,
    images: np.ndarray,
    labels: np.ndarray,
    source: str,
    span: int | None = None,
    shards: int = 4,
    request_ids: Sequence[str] = (),
    allow_duplicate: bool = False,
) -> SpanManifest:
    """Write `images` and `labels` as span `span` (default: the next) of `data_dir`; return its manifest.

    `request_ids`: the logged image ids the examples came from, if any.
    Refused (`DuplicateSpanError`) when an earlier span holds the same
    examples, unless `allow_duplicate`.
    """
    check_labelled(images, labels, source)
    digest = examples_sha256(images, labels)
    if not allow_duplicate:
        _refuse_duplicate(data_dir, _same_examples(data_dir, digest), source, len(images))
    span = span if span is not None else max(spans_on_disk(data_dir), default=0) + 1
    final = span_dir(data_dir, span)
    if os.path.exists(final):
        raise InputError(f"{final}: span {span} exists already; spans are never rewritten")
    os.makedirs(data_dir, exist_ok=True)
    staging = os.path.join(data_dir, f".tmp-span-{span}-{uuid.uuid4().hex[:8]}")
    try:
        bar = tqdm(range(len(images)), desc=f"span {span}", unit="img", mininterval=1.0)
        paths = write_tfrecords(images, labels.astype(np.int64), staging, shards, bar)
        manifest = SpanManifest(
            span=span,
            source=source,
            examples=len(images),
            class_counts=np.bincount(labels, minlength=NUM_CLASSES).tolist(),
            files={os.path.basename(p): sha256_of(p) for p in paths},
            written=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            examples_sha256=digest,
            request_ids=list(request_ids),
        )
        if not allow_duplicate:
            _refuse_duplicate(data_dir, _same_examples(data_dir, digest, manifest.files), source, len(images))
        with open(os.path.join(staging, MANIFEST_NAME), "w") as f:
            json.dump(manifest.to_json(), f, indent=2)
        os.rename(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest
