"""Which span a run ingests, and which spans may train: decided from the data directory and ML Metadata.

Spans on disk (`fmnist data prepare --spans K`, `fmnist data add`) are worked
through in order, one per run, so a backlog is ingested day by day and each
span is checked against the ones before it:

1. a span an earlier run ingested but did not finish (the run was killed or
   failed after the data gates) is run again first: its finished steps are
   cached, the interrupted one runs again;
2. otherwise the oldest span on disk newer than every ingested span;
3. otherwise (nothing new) the newest span that passed the gates again: every
   component is cached, nothing retrains and nothing new is pushed.

A span the schema gate, the drift gate or the label gate refused is never
trained on: it is excluded from every training window. So is a span whose
models the Evaluator refused every time it measured them against a served
model (a model trained on it as the newest span was never blessed): a bad day
that gets past the data gates would otherwise stay in every later window. It
joins the windows again once a model trained on it is blessed. Before any
model serves, a refusal (the accuracy floor) says the window is still too
small, not that the span is bad: the span stays, and the next day's model
trains on more data. (The week benchmark found the cascade otherwise: a first
day of 10,000 images just under the floor left the window, so the second day
again trained on 10,000 images only, and was refused too.)
"""

from __future__ import annotations

import dataclasses

from core.config import PipelineConfig
from core.errors import InputError
from core.spans import spans_on_disk
from pipeline.metadata import FINISHED, Metadata, open_store, properties, span_of, store_exists
from pipeline.nodes import ANOMALY_GATE, DRIFT_GATE, EVALUATOR, LABEL_GATE, PUSHER

DATA_GATES = (ANOMALY_GATE, DRIFT_GATE, LABEL_GATE)  # in the order a span meets them


@dataclasses.dataclass(frozen=True)
class SpanPlan:
    span: int  # the span this run ingests
    new: bool  # not ingested by an earlier run
    refused: tuple[int, ...] = ()  # spans a data gate refused: never trained on
    previous: int | None = None  # the newest span before `span` that passed the gates

    def describe(self) -> str:
        what = "new" if self.new else "ingested before"
        refused = f"; refused spans (never trained on): {list(self.refused)}" if self.refused else ""
        previous = (
            f"compared with span {self.previous}"
            if self.previous
            else "the first span: nothing to compare with"
        )
        return f"span {self.span} ({what}), {previous}{refused}"


def _finished_spans(metadata: Metadata) -> set[int]:
    """Spans whose run reached the Pusher (pushed or not): the newest span its model was trained on."""
    return {
        max(metadata.training_spans(model), default=0)
        for execution in metadata.node_executions(PUSHER)
        if execution.last_known_state in FINISHED
        for model in metadata.artifacts(execution.id, "model")
    }


def _model_gate_verdicts(metadata: Metadata) -> tuple[set[int], set[int]]:
    """Spans with a blessed model, and spans with a model refused against a served one (the newest
    span each model trained on)."""
    blessed, refused = set(), set()
    for execution in metadata.node_executions(EVALUATOR):
        if execution.last_known_state not in FINISHED:
            continue
        model = metadata.one(execution.id, "model")
        blessing = metadata.outputs(execution.id, "blessing")
        if model is None or not blessing:
            continue
        span = max(metadata.training_spans(model), default=0)
        if properties(blessing[0]).get("blessed") == 1:
            blessed.add(span)
        elif metadata.one(execution.id, "baseline_model") is not None:
            refused.add(span)
    return blessed, refused


def _failed_gate_spans(metadata: Metadata, gates=DATA_GATES) -> set[int]:
    failed = set()
    for gate in gates:
        for execution in metadata.node_executions(gate):
            if execution.last_known_state not in FINISHED:
                failed.update(span_of(a) for a in metadata.artifacts(execution.id, "examples"))
    return failed


def _accepted_spans(metadata: Metadata) -> set[int]:
    """Spans that passed every data gate (stores from before the label gate: the drift gate's word)."""
    label_refused = _failed_gate_spans(metadata, (LABEL_GATE,)) - metadata.gated_spans(LABEL_GATE)
    return metadata.gated_spans(DRIFT_GATE) - label_refused


def plan_spans(config: PipelineConfig) -> SpanPlan:
    """The span to run and what the data gates decided so far (see the module docstring)."""
    on_disk = spans_on_disk(config.data_dir)
    if not on_disk:
        raise InputError(
            f"{config.data_dir}: no spans (span-<N>/*.tfrecord.gz); run `fmnist data prepare "
            f"--workdir {config.workdir}` first"
        )
    ingested, accepted, failed, finished = set(), set(), set(), set()
    blessed, model_refused = set(), set()
    if store_exists(config):
        metadata = Metadata(open_store(config), config.pipeline_name)
        ingested, accepted = metadata.ingested_spans(), _accepted_spans(metadata)
        failed, finished = _failed_gate_spans(metadata), _finished_spans(metadata)
        blessed, model_refused = _model_gate_verdicts(metadata)
    refused = (failed - accepted) | (model_refused - blessed)
    pending = sorted((ingested - finished - refused) & set(on_disk))
    newer = [s for s in on_disk if s > max(ingested, default=0)]
    if pending:
        span, new = pending[0], False
    elif newer:
        span, new = newer[0], True
    else:
        span, new = max(accepted & set(on_disk) or set(on_disk)), False
    previous = max((a for a in accepted - refused if a < span), default=None)
    return SpanPlan(span, new, tuple(sorted(refused - {span})), previous)
