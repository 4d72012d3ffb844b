"""TrainingWindow: the spans the model trains on, as one Examples artifact for Transform and the Trainer.

It runs right after the data gates, so reaching it means the run's span passed
every one of them: it records that in the span ledger (`accepted`, with the
span's Examples and its size), then takes the newest usable spans up to and
including this one, as many as `window_spans` and `window_images` allow
(`core/span_rules.py`: spans refused by a gate, or only ever refused by the
Evaluator against a served model, never train). TFX would resolve such a
window from ML Metadata with a resolver; Kubeflow V2 / Vertex AI compile none
but TFX's two built-in strategies, so the window is read from the ledger,
alike on every orchestrator.

The output holds each window span's split files under its own name
(`Split-train/span-<N>-<file>`): hard links on a local disk (no bytes copied,
and deleting a span's own artifact later does not break a window that holds
it), copies on an object store. Its `window_spans` custom property lists the
spans (the run report, lineage and the span rules read it); its `span` is the
run's span. It takes the run's span Examples as its input, so the window is
chosen once per span and cached with it.
"""

import json
import os

import tensorflow as tf
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts

from components.loop_state import (
    accepted_examples,
    examples_of,
    read_records,
    span_of,
    split_dir,
    split_names,
)
from core.examples import compression_of, split_files
from core.ledger import ACCEPTED, Record, append
from core.span_rules import SpanHistory, window
from core.spans import link_or_copy

WINDOW_SPANS_PROPERTY = "window_spans"
WINDOW_SOURCES_PROPERTY = "window_sources"  # {span: URI of the span's Examples}, JSON
IMAGES_PROPERTY = "images"
# ExampleGen's custom properties a consumer of Examples reads (Transform: the payload format).
CARRIED_PROPERTIES = ("payload_format", "file_format")


def count_examples(uri: str, splits: list[str]) -> int:
    files = [f for split in splits for f in split_files(split_dir(uri, split))]
    return sum(1 for f in files for _ in tf.data.TFRecordDataset(f, compression_of(f)))


@component
def TrainingWindow(
    examples: InputArtifact[standard_artifacts.Examples],
    window_examples: OutputArtifact[standard_artifacts.Examples],
    ledger: Parameter[str],
    window_spans: Parameter[int] = 0,
    window_images: Parameter[int] = 0,
) -> None:
    """Record the run's span as accepted, then link the window's span files into `window_examples`."""
    span, splits = span_of(examples), split_names(examples)
    accepted = Record(span, ACCEPTED, examples=examples.uri, images=count_examples(examples.uri, splits))
    append(ledger, [accepted])
    records = read_records(ledger)
    sources = accepted_examples(records)
    spans = window(span, SpanHistory.of(records), window_spans, window_images)
    window_examples.split_names = artifact_utils.encode_split_names(splits)
    for split in splits:
        target = artifact_utils.get_split_uri([window_examples], split)
        tf.io.gfile.makedirs(target)
        for window_span in spans:
            for source in split_files(split_dir(examples_of(sources, window_span), split)):
                link_or_copy(source, os.path.join(target, f"span-{window_span}-{os.path.basename(source)}"))
    window_examples.span = span
    for name in CARRIED_PROPERTIES:
        if examples.has_custom_property(name):
            window_examples.set_string_custom_property(name, examples.get_string_custom_property(name))
    window_examples.set_int_custom_property("span", span)
    window_examples.set_string_custom_property(WINDOW_SPANS_PROPERTY, json.dumps(spans))
    window_examples.set_string_custom_property(
        WINDOW_SOURCES_PROPERTY, json.dumps({s: sources[s].examples for s in spans})
    )
    window_examples.set_int_custom_property(IMAGES_PROPERTY, sum(sources[s].images for s in spans))
