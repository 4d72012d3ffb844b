"""Whole files on any TensorFlow filesystem: local paths and object-store URIs (`gs://`) alike.

Reports, the drift reference cache and report directories may live beside
the pipeline's artifacts, which on a cloud setup are in a bucket; these
helpers go through `tf.io.gfile`, which serves both. TensorFlow is imported
when first used, so importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import os
import uuid

from core.config import is_uri


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def exists(path: str) -> bool:
    return _gfile().exists(path)


def make_dirs(path: str) -> None:
    """Create a directory and its parents (nothing to do on object stores, which have no directories)."""
    _gfile().makedirs(path)


def read_bytes(path: str) -> bytes:
    """The whole file. Local files are read through one descriptor, so a file renamed over while it is
    read gives its old content; TensorFlow's GFile sizes its read from the path, and may return the
    new file's length of the old one."""
    if not is_uri(path):
        with open(path, "rb") as f:
            return f.read()
    with _gfile().GFile(path, "rb") as f:
        return f.read()


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def write_bytes(path: str, data: bytes) -> None:
    with _gfile().GFile(path, "wb") as f:
        f.write(data)


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def replace_text(path: str, text: str) -> None:
    """Write `text` to `path` so that readers see the old or the new content, never a mix.

    Locally: a sibling temporary file, synced, renamed over the target (the
    directory is created if needed). On an object store a single object write
    is already atomic.
    """
    if is_uri(path):
        write_text(path, text)
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    staging = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{uuid.uuid4().hex[:8]}")
    try:
        with open(staging, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(staging, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(staging)


def rename_dir(source: str, target: str) -> None:
    """Move a directory (on object stores: each object, as TensorFlow's filesystem does it)."""
    _gfile().rename(source, target)


def remove_tree(path: str) -> None:
    if _gfile().exists(path):
        _gfile().rmtree(path)
