"""Model version directories on disk, by TF Serving's rule: `<model base path>/<version>/`.

TF Serving takes a child of the model's base path as a version when its name
parses as an int64 with `absl::SimpleAtoi` (`ParseVersionNumber` in
tensorflow_serving/sources/storage_path/file_system_storage_path_source.cc):
optional surrounding whitespace and sign, decimal digits, within int64. Any
other name (`.tmp-*` staging directories, `notes`, `²`, a number beyond int64)
is skipped without an error. Listing goes through `tf.io.gfile`, so local
disks and object stores (`gs://`) behave alike.
"""

from __future__ import annotations

import os
import re

from core.vocabulary import SAVED_MODEL_FILE

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# SimpleAtoi's grammar, ASCII digits only (Python's str.isdigit also accepts '²' and other digits).
_VERSION_NAME = re.compile(r"^\s*[+-]?[0-9]+\s*$", re.ASCII)


def parse_version(name: str) -> int | None:
    """The version number a directory name stands for, or None when TF Serving would skip it."""
    name = name.rstrip("/")
    if not _VERSION_NAME.match(name):
        return None
    number = int(name)
    return number if INT64_MIN <= number <= INT64_MAX else None


def version_dirs(base_path: str) -> dict[int, str]:
    """Version number -> directory path of every version-named child of `base_path` (none if absent).

    Two names for one number (`19` and `0019`): the later name in sorted order
    wins, as TF Serving keeps the later child it lists.
    """
    import tensorflow as tf

    if not tf.io.gfile.isdir(base_path):
        return {}
    found = {}
    for name in sorted(tf.io.gfile.listdir(base_path)):
        number = parse_version(name)
        path = os.path.join(base_path, name.rstrip("/"))
        if number is not None and tf.io.gfile.isdir(path):
            found[number] = path
    return found


def has_saved_model(version_path: str) -> bool:
    """Whether a version directory holds its `saved_model.pb` (a copy in progress may not yet)."""
    import tensorflow as tf

    return tf.io.gfile.exists(os.path.join(version_path, SAVED_MODEL_FILE))


def newest_version(base_path: str) -> int | None:
    """The highest version on disk: what TF Serving's default "latest" policy serves."""
    return max(version_dirs(base_path), default=None)
