"""The loop's rules for spans: pure functions of "spans on disk" and "verdicts so far" (the span ledger).

Spans on disk (`fmnist data prepare --spans K`, `fmnist data add`) are worked
through in order, one per run, so a backlog is ingested day by day and each
span is checked against the ones before it. The span a run takes is:

1. a span an earlier run ingested but did not finish (the run was killed or
   failed after the data gates) and that no gate refused: its finished steps
   are cached, the interrupted one runs again;
2. otherwise the oldest span on disk newer than every ingested span;
3. otherwise (nothing new) the newest span that passed the gates again: every
   component is cached, nothing retrains and nothing new is pushed.

A span the schema, drift or label gate refused is never trained on: it is in
no training window. Neither is a span whose models the Evaluator refused
every time it measured them against a served model (a model whose window
ended with it was never blessed): a bad day that gets past the data gates
would otherwise stay in every later window; it joins the windows again once a
model trained on it is blessed. Before any model serves, a refusal (only the
accuracy floor applies then) says the window is still too small, not that the
span is bad: the span stays, and the next day trains on more. (The week
benchmark found the cascade otherwise: a first day of 10,000 images just under
the floor left the window, so day 2 trained on 10,000 images again and failed
too.)

The components that apply these rules (`components/span_planner.py`,
`drift_baselines.py`, `training_window.py`) read their inputs from the ledger
and the data directory and decide by calling these functions; what they write
is the decision's outcome (the planner stages the chosen span and appends its
`ingested` line to the ledger). The tables in `tests/core/test_span_rules.py`
pin the rules down.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from core.ledger import ACCEPTED, INGESTED, MODEL, REFUSED, Record


@dataclasses.dataclass(frozen=True)
class SpanHistory:
    """What the ledger says about every span so far, as sets of span numbers."""

    ingested: frozenset[int] = frozenset()
    accepted: frozenset[int] = frozenset()  # passed every data gate
    data_refused: frozenset[int] = frozenset()  # a data gate refused it
    finished: frozenset[int] = frozenset()  # a run reached the verdict on a model ending with it
    blessed: frozenset[int] = frozenset()  # a model ending with it was blessed
    model_refused: frozenset[int] = frozenset()  # a model ending with it was refused against a served one
    images: dict[int, int] = dataclasses.field(default_factory=dict)  # accepted span -> examples

    @classmethod
    def of(cls, records: Iterable[Record]) -> SpanHistory:
        sets: dict[str, set[int]] = {f.name: set() for f in dataclasses.fields(cls) if f.name != "images"}
        images: dict[int, int] = {}
        for record in records:
            if record.event == INGESTED:
                sets["ingested"].add(record.span)
            elif record.event == REFUSED:
                sets["data_refused"].add(record.span)
            elif record.event == ACCEPTED:
                sets["accepted"].add(record.span)
                images[record.span] = record.images
            elif record.event == MODEL:
                sets["finished"].add(record.span)
                if record.blessed:
                    sets["blessed"].add(record.span)
                elif record.against_served:
                    sets["model_refused"].add(record.span)
        return cls(**{name: frozenset(spans) for name, spans in sets.items()}, images=images)

    @property
    def refused(self) -> frozenset[int]:
        """Spans that never train: refused by a data gate, or only ever by the Evaluator vs a served model."""
        return (self.data_refused - self.accepted) | (self.model_refused - self.blessed)

    @property
    def usable(self) -> frozenset[int]:
        """Spans that may join a training window or be compared with."""
        return self.accepted - self.refused


@dataclasses.dataclass(frozen=True)
class SpanChoice:
    """The span a run takes, and what it will be compared with."""

    span: int
    new: bool  # not ingested by an earlier run
    refused: tuple[int, ...] = ()  # spans that never train (other than this one)
    previous: int | None = None  # the newest usable span before it

    def describe(self) -> str:
        what = "new" if self.new else "ingested before"
        refused = f"; refused spans (never trained on): {list(self.refused)}" if self.refused else ""
        previous = (
            f"compared with span {self.previous}"
            if self.previous is not None
            else "the first span: nothing to compare with"
        )
        return f"span {self.span} ({what}), {previous}{refused}"


def choose_span(on_disk: Sequence[int], history: SpanHistory) -> SpanChoice:
    """The span to run (rules 1-3 of the module docstring); `on_disk` must not be empty."""
    present = set(on_disk)
    refused = history.refused
    pending = sorted((history.ingested - history.finished - refused) & present)
    newer = sorted(s for s in present if s > max(history.ingested, default=0))
    if pending:
        span, new = pending[0], False
    elif newer:
        span, new = newer[0], True
    else:
        span, new = max(history.accepted & present or present), False
    return SpanChoice(span, new, tuple(sorted(refused - {span})), previous_span(span, history))


def previous_span(span: int, history: SpanHistory) -> int | None:
    """The newest usable span before `span`: what a new span's drift is measured against."""
    return max((s for s in history.usable if s < span), default=None)


def window(
    span: int, history: SpanHistory, max_spans: int = 0, max_images: int = 0, before: bool = False
) -> list[int]:
    """The newest usable spans up to `span`, oldest first: at most `max_spans` of them and, newest
    first, as many whole spans as fit in `max_images` (the newest always, however large); 0: no bound.

    With `before`, only spans before `span`: the window a new span is compared
    with before it may join.
    """
    taken, images = [], 0
    for candidate in sorted((s for s in history.usable if (s < span if before else s <= span)), reverse=True):
        size = history.images.get(candidate, 0)
        if taken and ((max_spans and len(taken) >= max_spans) or (max_images and images + size > max_images)):
            break
        taken.append(candidate)
        images += size
    return sorted(taken)
