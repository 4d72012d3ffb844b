"""SpanPlanner: the first step of every run; it picks the span the run ingests and stages it for ExampleGen.

The choice follows the loop's rules (`core/span_rules.py`) over the spans in
the data directory and the verdicts in the span ledger (`core/ledger.py`),
both read through TensorFlow's filesystem, so it runs the same under
LocalDagRunner and on Kubeflow Pipelines / Vertex AI, where a component can
query neither ML Metadata nor a custom resolver. The chosen span is staged,
alone, in the pipeline's intake directory (`<pipeline_root>/intake/span-N/`,
hard links where the disk allows, else copies that keep each file's
modification time), and SpanExampleGen, which runs after this step, ingests
it through ExampleGen's own `{SPAN}` resolution (the latest span in the
intake is the only one). ExampleGen's input fingerprint (file sizes and
modification times) is unchanged when the same span is staged again, so a run
with nothing new stays cached from ExampleGen on; only this step and the
Importer before it run on every run.
"""

import json
import os

from absl import logging
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component

from components.artifacts import DataDirectory, SpanPlan
from core import storage
from core.errors import InputError
from core.ledger import INGESTED, Record, append, read_ledger
from core.span_rules import SpanHistory, choose_span
from core.spans import spans_on_disk, stage_span

PLAN_FILE = "plan.json"
SPAN_PROPERTY, NEW_PROPERTY, PREVIOUS_PROPERTY = "span", "new", "previous"
REFUSED_PROPERTY, DESCRIPTION_PROPERTY, DATA_DIR_PROPERTY = "refused", "description", "data_dir"
PLAN_LOG_PREFIX = "span plan:"  # shown among the run's progress lines


@component
def SpanPlanner(
    data: InputArtifact[DataDirectory],
    plan: OutputArtifact[SpanPlan],
    intake: Parameter[str],
    ledger: Parameter[str],
) -> None:
    """Choose this run's span from `data` and `ledger`, stage it in `intake`, record it in `plan`."""
    on_disk = spans_on_disk(data.uri)
    if not on_disk:
        raise InputError(f"{data.uri}: no spans (span-<N>/*.tfrecord.gz); run `fmnist data prepare` first")
    history = SpanHistory.of(read_ledger(ledger))
    choice = choose_span(on_disk, history)
    stage_span(data.uri, choice.span, intake)
    if choice.span not in history.ingested:
        append(ledger, [Record(choice.span, INGESTED)])
    decided = {
        SPAN_PROPERTY: choice.span,
        NEW_PROPERTY: choice.new,
        PREVIOUS_PROPERTY: choice.previous,
        REFUSED_PROPERTY: list(choice.refused),
        DESCRIPTION_PROPERTY: choice.describe(),
        DATA_DIR_PROPERTY: data.uri,
    }
    storage.write_text(os.path.join(plan.uri, PLAN_FILE), json.dumps(decided, indent=2))
    plan.set_int_custom_property(SPAN_PROPERTY, choice.span)
    plan.set_int_custom_property(NEW_PROPERTY, int(choice.new))
    plan.set_string_custom_property(DESCRIPTION_PROPERTY, choice.describe())
    plan.set_string_custom_property(REFUSED_PROPERTY, json.dumps(list(choice.refused)))
    plan.set_string_custom_property(DATA_DIR_PROPERTY, data.uri)
    logging.info("%s %s", PLAN_LOG_PREFIX, choice.describe())  # absl: TFX's progress log shows it
