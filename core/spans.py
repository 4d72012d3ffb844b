"""The data directory's layout: spans of training data arriving over time, and the gold test set.

    <data_dir>/span-1/data-00000-of-00004.tfrecord.gz ... manifest.json
    <data_dir>/span-2/...
    <data_dir>/test/data-00000-of-00001.tfrecord.gz       (the official 10,000 images, never trained on)

TFX's span convention: the pipeline's ImportExampleGen reads
`span-{SPAN}/*.tfrecord.gz`, one span per run, and TFX's span resolvers pick
the training window from what ML Metadata recorded. Listing the spans on disk
(here) only tells the runner which span arrived next.
"""

from __future__ import annotations

import os
import re

from core.vocabulary import TFRECORD_SUFFIX

SPAN_PREFIX = "span-"
SPAN_DIR_PATTERN = SPAN_PREFIX + "{SPAN}"  # TFX's span placeholder, resolved by ImportExampleGen
GOLD_SPLIT_DIR = "test"
_SPAN_NAME = re.compile(r"^span-([0-9]+)$", re.ASCII)


def span_dir(data_dir: str, span: int) -> str:
    return os.path.join(data_dir, f"{SPAN_PREFIX}{span}")


def span_file_pattern() -> str:
    """ImportExampleGen's input pattern, relative to the data directory."""
    return f"{SPAN_DIR_PATTERN}/*{TFRECORD_SUFFIX}"


def gold_file_pattern() -> str:
    return f"{GOLD_SPLIT_DIR}/*{TFRECORD_SUFFIX}"


def spans_on_disk(data_dir: str) -> list[int]:
    """Span numbers with a directory holding at least one TFRecord file, ascending."""
    import tensorflow as tf

    if not tf.io.gfile.isdir(data_dir):
        return []
    found = []
    for name in tf.io.gfile.listdir(data_dir):
        match = _SPAN_NAME.match(name.rstrip("/"))
        if match and tf.io.gfile.glob(os.path.join(data_dir, name.rstrip("/"), f"*{TFRECORD_SUFFIX}")):
            found.append(int(match.group(1)))
    return sorted(found)
