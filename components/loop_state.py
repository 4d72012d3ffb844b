"""What the loop's components share: the span of an Examples artifact, the ledger's view of past spans.

Components read the pipeline's own state through TensorFlow's filesystem
(the span ledger, `core/ledger.py`), never ML Metadata, so that they decide
alike on every orchestrator. A component that decides something per span takes
the run's span Examples as its input: TFX then caches its decision with that
artifact, and a run with nothing new resolves what the span's first run did.
"""

from __future__ import annotations

import os

import tensorflow as tf
from tfx import types
from tfx.types import artifact_utils

from core.errors import PipelineError
from core.ledger import ACCEPTED, REFUSED, Record, append, read_ledger

SPAN_PROPERTY = "span"  # ImportExampleGen 1.16 writes the span as a custom property


def span_of(examples: types.Artifact) -> int:
    return examples.get_int_custom_property(SPAN_PROPERTY)


def split_dir(uri: str, split: str) -> str:
    """Where TFX keeps one split of an artifact (`<uri>/Split-<name>`)."""
    return os.path.join(uri, f"Split-{split}")


def split_names(examples: types.Artifact) -> list[str]:
    return artifact_utils.decode_split_names(examples.split_names)


def accepted_examples(records: list[Record]) -> dict[int, Record]:
    """The newest `accepted` record of each span: where its Examples are, how many."""
    return {r.span: r for r in records if r.event == ACCEPTED}


def examples_of(sources: dict[int, Record], span: int) -> str:
    """Where span `span`'s Examples are; PipelineError naming them when they are gone.

    Retention keeps the Examples of every span that can still join a window
    (`pipeline/retention.py`), so this fails only when they were removed by other means.
    """
    uri = sources[span].examples
    if not tf.io.gfile.isdir(uri):
        raise PipelineError(
            f"span {span}: its Examples at {uri} are gone, yet the span ledger holds it usable; "
            "restore them, or add the span's data again as a new span"
        )
    return uri


def record_refusal(ledger: str, examples: types.Artifact, gate: str, reason: str) -> None:
    """A data gate's refusal of the run's span, written before the gate fails the run."""
    if ledger:
        append(ledger, [Record(span_of(examples), REFUSED, gate=gate, reason=reason)])


def read_records(ledger: str) -> list[Record]:
    return read_ledger(ledger) if ledger else []
