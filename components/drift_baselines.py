"""DriftBaselines: the image-feature statistics a new span is compared with (the previous span, the window).

TFX's DistributionValidator compares two statistics artifacts; Kubeflow V2 /
Vertex AI cannot run a custom resolver to pick the earlier spans' Examples.
This component reads the span ledger instead (`core/ledger.py`): the newest
usable span before the run's span, and the training window before it
(`core/span_rules.py`: refused spans excluded), with the Examples each was
accepted with, and writes the binned image-feature statistics of their `train`
splits as two ExampleStatistics artifacts, laid out as StatisticsGen lays out
its own (see `components/image_statistics.py`). Before any span was accepted
there is nothing to compare with: both baselines are the run's span itself
(every distance 0), and their `spans` property is empty, so the report says
"the first span".

It takes the run's span Examples as its input, so its choice is made once per
span and cached with it.
"""

import json

from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts

from components.image_statistics import BINS_PROPERTY, write_split_statistics
from components.loop_state import accepted_examples, examples_of, read_records, span_of, split_dir
from core.examples import read_labelled_images, split_files
from core.span_rules import SpanHistory, previous_span, window

TRAIN = "train"
SPANS_PROPERTY = "spans"  # the spans a baseline summarises (JSON list); empty: the run's span itself


def _write_baseline(statistics, spans: list[int], sources: dict, itself: str, bins: int) -> None:
    uris = [examples_of(sources, s) for s in spans] or [itself]
    files = [f for uri in uris for f in split_files(split_dir(uri, TRAIN))]
    images, labels = read_labelled_images(files)
    statistics.split_names = artifact_utils.encode_split_names([TRAIN])
    write_split_statistics(images, labels, artifact_utils.get_split_uri([statistics], TRAIN), bins)
    statistics.set_int_custom_property(BINS_PROPERTY, bins)
    statistics.set_string_custom_property(SPANS_PROPERTY, json.dumps(spans))


@component
def DriftBaselines(
    examples: InputArtifact[standard_artifacts.Examples],
    previous_span_statistics: OutputArtifact[standard_artifacts.ExampleStatistics],
    previous_window_statistics: OutputArtifact[standard_artifacts.ExampleStatistics],
    ledger: Parameter[str],
    window_spans: Parameter[int] = 0,
    window_images: Parameter[int] = 0,
    bins: Parameter[int] = 20,
) -> None:
    """Statistics of the previous usable span and of the window before the run's span (see above)."""
    records = read_records(ledger)
    history, span = SpanHistory.of(records), span_of(examples)
    sources = accepted_examples(records)
    previous = previous_span(span, history)
    _write_baseline(
        previous_span_statistics, [previous] if previous is not None else [], sources, examples.uri, bins
    )
    _write_baseline(
        previous_window_statistics, window(span, history, window_spans, window_images, before=True), sources,
        examples.uri, bins,
    )  # fmt: skip
