"""Checks on paths a command will write to, made before any work starts.

A command that would fail at its last step (writing a report, rotating a log)
after minutes of work checks its output location first, and names it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator

from core.config import is_uri
from core.errors import InputError


def writable_directory(path: str, flag: str) -> str:
    """Create `path` if needed and prove a file can be written in it; InputError naming `flag` if not.

    Object-store URIs (`gs://`) are not probed here: their permissions show
    on the first write.
    """
    if is_uri(path):
        return path
    if os.path.exists(path) and not os.path.isdir(path):
        raise InputError(f"{flag} {path}: is a file, not a directory")
    probe = os.path.join(path, f".write-test-{uuid.uuid4().hex[:8]}")
    try:
        os.makedirs(path, exist_ok=True)
        with open(probe, "w") as f:
            f.write("")
        os.remove(probe)
    except OSError as err:
        raise InputError(f"{flag} {path}: cannot write there: {err.strerror or err}") from None
    return path


def _first_missing(path: str) -> str | None:
    """The outermost directory of `path` that does not exist yet (what creating it would create)."""
    missing = None
    current = os.path.abspath(path)
    while not os.path.exists(current):
        missing = current
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return missing


@contextlib.contextmanager
def output_directory(path: str, flag: str) -> Iterator[str]:
    """`writable_directory`, checked before the work; what it created is removed if the work fails empty.

    A command refused on bad input after this check leaves no empty report
    directories behind; one that wrote any file keeps it.
    """
    created = None if is_uri(path) else _first_missing(path)
    writable_directory(path, flag)
    try:
        yield path
    except BaseException:
        if created and not any(files for _, _, files in os.walk(created)):
            shutil.rmtree(created, ignore_errors=True)
        raise
