"""How a benchmark was run, saved beside its figures so that anyone can run it again."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path


def command_line() -> str:
    """This benchmark's command as typed from the repository's root, quoted for a shell."""
    return shlex.join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])
