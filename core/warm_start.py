"""What the Trainer did with the served model it was given: started from its weights, or not, and why.

The Trainer's `base_model` input only says which model it was offered; a
changed architecture makes it train from scratch instead. The run report and
`fmnist lineage` read this record so neither claims a warm start that did not
happen. It lives in the Trainer's `model_run` output, beside TensorBoard's logs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from core import storage

RECORD_NAME = "warm_start.json"


@dataclass(frozen=True)
class WarmStart:
    base_model: str  # the served model's directory the Trainer was offered
    restored: bool  # its weights were the starting point
    why_not: str | None = None  # when not restored


def write_warm_start(model_run_dir: str, record: WarmStart) -> None:
    storage.make_dirs(model_run_dir)
    storage.write_text(f"{model_run_dir}/{RECORD_NAME}", json.dumps(asdict(record)))


def read_warm_start(model_run_dir: str) -> WarmStart | None:
    """The record, or None for a Trainer that was offered no served model."""
    path = f"{model_run_dir}/{RECORD_NAME}"
    return WarmStart(**json.loads(storage.read_text(path))) if storage.exists(path) else None
