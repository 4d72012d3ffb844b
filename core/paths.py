"""Checks on paths a command will write to, made before any work starts.

A command that would fail at its last step (writing a report, rotating a log)
after minutes of work checks its output location first, and names it.
"""

from __future__ import annotations

import os
import uuid

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
