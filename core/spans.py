"""The data directory's layout: spans of training data arriving over time, and the gold test set.

    <data_dir>/span-1/data-00000-of-00004.tfrecord.gz ... manifest.json
    <data_dir>/span-2/...
    <data_dir>/test/data-00000-of-00001.tfrecord.gz       (the official 10,000 images, never trained on)

TFX's span convention: the pipeline's ImportExampleGen reads
`span-{SPAN}/*.tfrecord.gz`. The span planner (`components/span_planner.py`)
picks one span per run from the spans on disk and stages it, alone, in the
pipeline's intake directory (`stage_span`), which is where SpanExampleGen
reads; the pipeline only ever reads the data directory itself (`fmnist data
prepare` and `fmnist data add` are what write it).
"""

from __future__ import annotations

import os
import re
import shutil

from core.vocabulary import MANIFEST_NAME, TFRECORD_SUFFIX

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


def _tf_gfile():
    import tensorflow as tf

    return tf.io.gfile


def _same_file(source: str, target: str) -> bool:
    """Whether `target` already holds `source`: the same inode, or (a copy) the same size and mtime."""
    gfile = _tf_gfile()
    if not gfile.exists(target):
        return False
    if "://" not in source and "://" not in target:
        if os.path.samefile(source, target):
            return True
        a, b = os.stat(source), os.stat(target)
        return (a.st_size, int(a.st_mtime)) == (b.st_size, int(b.st_mtime))
    return gfile.stat(source).length == gfile.stat(target).length


def link_or_copy(source: str, target: str) -> None:
    """A hard link where the filesystem allows it, else a copy that keeps the modification time.

    ExampleGen fingerprints its input by file sizes and modification times, so
    staging the same span again leaves its fingerprint, and its cache, as they were.
    """
    gfile = _tf_gfile()
    if gfile.exists(target):
        gfile.remove(target)
    if "://" in source or "://" in target:
        gfile.copy(source, target, overwrite=True)
        return
    try:
        os.link(source, target)
    except OSError:  # another filesystem, or links not allowed
        shutil.copy2(source, target)


def stage_span(data_dir: str, span: int, intake_dir: str) -> str:
    """Make `<intake_dir>/span-<span>/` hold exactly the span's TFRecords (and manifest); no other span.

    Files already staged are kept (same file), so staging is cheap when
    nothing changed. Returns the staged directory.
    """
    gfile = _tf_gfile()
    source, target = span_dir(data_dir, span), span_dir(intake_dir, span)
    gfile.makedirs(target)
    for name in gfile.listdir(intake_dir):
        name = name.rstrip("/")
        if _SPAN_NAME.match(name) and name != os.path.basename(target):
            gfile.rmtree(os.path.join(intake_dir, name))
    wanted = {
        os.path.basename(path): path for path in gfile.glob(os.path.join(source, f"*{TFRECORD_SUFFIX}"))
    }
    manifest = os.path.join(source, MANIFEST_NAME)
    if gfile.exists(manifest):
        wanted[MANIFEST_NAME] = manifest
    for name in gfile.listdir(target):
        if name not in wanted:
            gfile.remove(os.path.join(target, name))
    for name, path in wanted.items():
        staged = os.path.join(target, name)
        if not _same_file(path, staged):
            link_or_copy(path, staged)
    return target
