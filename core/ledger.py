"""The span ledger: what the loop decided about each span, in a file every orchestrator's components can read.

Which span a run ingests, what a new span is compared with, which spans train
and which may never train are decided inside the pipeline, by components that
read the pipeline's own state through TensorFlow's filesystem. On Vertex AI
Pipelines a component cannot query ML Metadata and no custom resolver runs
(only TFX's two built-in strategies compile), so the decisions cannot be read
back from ML Metadata alone. The components that make a decision write it
here instead, one JSON line per record, to `<pipeline_root>/span_ledger.jsonl` (`PipelineConfig.span_ledger`):

- `ingested`: the span planner staged the span for this run;
- `refused`: a data gate (schema, drift, labels) refused the span, and why;
- `accepted`: the span passed every data gate (with its Examples artifact,
  so later windows can use it without querying ML Metadata);
- `model`: a model whose training window ended with this span was judged by
  the Evaluator (blessed or not, against a served model or not) and pushed or not.

Records are only ever added. Writers run one after the other along the DAG
(planner, gates, training window, verdict), and runs are exclusive
(`pipeline/run_guard.py`), so a read-then-replace is safe; the file is
replaced atomically (`core.storage.replace_text`), so a reader sees the old
or the new ledger, never half of one. ML Metadata stays the record of what ran.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Iterable

from core import storage
from core.errors import InputError

INGESTED, REFUSED, ACCEPTED, MODEL = "ingested", "refused", "accepted", "model"
EVENTS = (INGESTED, REFUSED, ACCEPTED, MODEL)


@dataclasses.dataclass(frozen=True)
class Record:
    """One line of the ledger; the fields beyond `span` and `event` belong to some events only."""

    span: int
    event: str
    time: str = ""
    gate: str = ""  # refused: the gate's node id
    reason: str = ""  # refused: the gate's message
    examples: str = ""  # accepted: the URI of the span's Examples artifact
    images: int = 0  # accepted: how many examples the span holds
    blessed: bool | None = None  # model: the Evaluator's verdict
    against_served: bool | None = None  # model: measured against a served model (not a first push)
    pushed_version: int | None = None  # model: the version the Pusher published, if any

    def to_json(self) -> str:
        """One line of JSON with the fields that differ from their defaults (and always span and event)."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        kept = {
            k: v for k, v in dataclasses.asdict(self).items() if k in ("span", "event") or v != defaults[k]
        }
        return json.dumps(kept, sort_keys=True)


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _parse(path: str, number: int, line: str) -> Record:
    try:
        fields = json.loads(line)
        record = Record(**fields)
    except (ValueError, TypeError) as err:
        raise InputError(f"{path}, line {number}: not a ledger record ({err})") from None
    if record.event not in EVENTS or not isinstance(record.span, int):
        raise InputError(f"{path}, line {number}: unknown event {record.event!r} or span {record.span!r}")
    return record


def read_ledger(path: str) -> list[Record]:
    """Every record, oldest first; none before the first run. A damaged line is bad input, named."""
    if not storage.exists(path):
        return []
    lines = storage.read_text(path).splitlines()
    return [_parse(path, n, line) for n, line in enumerate(lines, 1) if line.strip()]


def append(path: str, records: Iterable[Record]) -> None:
    """Add `records` (stamped with the time if they have none), replacing the file atomically."""
    stamped = [r if r.time else dataclasses.replace(r, time=now()) for r in records]
    current = storage.read_text(path) if storage.exists(path) else ""
    if current and not current.endswith("\n"):
        current += "\n"
    storage.replace_text(path, current + "".join(r.to_json() + "\n" for r in stamped))
