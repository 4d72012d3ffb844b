"""Writing one span of labelled examples: checked, complete or absent, with a checksummed manifest.

Every way data enters (`fmnist data prepare --spans K`, `fmnist data add`)
ends here. The span is written under a hidden staging name beside the others
and renamed into place only when every file and the manifest are written, so
ImportExampleGen (which reads `span-{SPAN}/*.tfrecord.gz`) never sees part of
a span, and a bad input leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import shutil
import uuid
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
) -> SpanManifest:
    """Write `images` and `labels` as span `span` (default: the next) of `data_dir`; return its manifest."""
    check_labelled(images, labels, source)
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
        )
        with open(os.path.join(staging, MANIFEST_NAME), "w") as f:
            json.dump(manifest.to_json(), f, indent=2)
        os.rename(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest
