"""The span rules as tables: spans on disk and verdicts so far in; the span to run and the windows out."""

import pytest

from core.ledger import ACCEPTED, INGESTED, MODEL, REFUSED, Record
from core.span_rules import SpanHistory, choose_span, previous_span, window


def history(*events: tuple) -> SpanHistory:
    """Ledger records from short tuples: (span, "ingested"), (span, "refused"), (span, "accepted"),
    (span, "blessed"), (span, "refused-vs-served"), (span, "refused-first-push")."""
    records = []
    for span, what in events:
        if what in (INGESTED, REFUSED, ACCEPTED):
            records.append(Record(span, what, images=100 if what == ACCEPTED else 0))
        else:
            blessed, against = {"blessed": (True, True), "refused-vs-served": (False, True),
                                "refused-first-push": (False, False)}[what]  # fmt: skip
            records.append(Record(span, MODEL, blessed=blessed, against_served=against))
    return SpanHistory.of(records)


def done(span: int, model: str = "blessed") -> tuple:
    """A span that went all the way: ingested, accepted, and a model verdict."""
    return ((span, INGESTED), (span, ACCEPTED), (span, model))


# (spans on disk, history, expected (span, new, refused, previous))
CHOICES = {
    "the very first run takes the oldest span": ([1, 2, 3], history(), (1, True, (), None)),
    "a backlog is taken in order, one span a run": ([1, 2, 3], history(*done(1)), (2, True, (), 1)),
    "a span a run ingested but did not finish runs again first": (
        [1, 2, 3], history(*done(1), (2, INGESTED), (2, ACCEPTED)), (2, False, (), 1),
    ),
    "a killed run before any gate: the span runs again": (
        [1, 2, 3], history(*done(1), (2, INGESTED)), (2, False, (), 1),
    ),
    "a span a data gate refused is not run again; the next one is compared with the last good one": (
        [1, 2, 3], history(*done(1), (2, INGESTED), (2, REFUSED)), (3, True, (2,), 1),
    ),
    "nothing new: the newest accepted span again (everything cached)": (
        [1, 2], history(*done(1), (2, INGESTED), (2, REFUSED)), (1, False, (2,), None),
    ),
    "nothing new after good spans: the newest one again, compared with the one before": (
        [1, 2], history(*done(1), *done(2)), (2, False, (), 1),
    ),
    "a span refused only by the Evaluator against a served model never trains again": (
        [1, 2, 3], history(*done(1), *done(2, "refused-vs-served")), (3, True, (2,), 1),
    ),
    "a span blessed once is usable even if another model ending with it was refused": (
        [1, 2, 3], history(*done(1), *done(2), (2, "refused-vs-served")), (3, True, (), 2),
    ),
    "cold start: a floor refusal with nothing serving keeps the span": (
        [1, 2], history(*done(1, "refused-first-push")), (2, True, (), 1),
    ),
    "a span deleted from disk is not run again": ([2], history(*done(1)), (2, True, (), 1)),
    "a pending span that is gone from disk is skipped": (
        [1, 3], history(*done(1), (2, INGESTED), (2, ACCEPTED)), (3, True, (), 2),
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", CHOICES)
def test_the_span_a_run_takes(case: str):
    on_disk, past, expected = CHOICES[case]
    choice = choose_span(on_disk, past)
    assert (choice.span, choice.new, choice.refused, choice.previous) == expected


# (history, span, max spans, max images, before, expected window); every accepted span holds 100 images
WINDOWS = {
    "every usable span up to this one": (
        history(*done(1), *done(2), (3, ACCEPTED)), 3, 0, 0, False, [1, 2, 3],
    ),
    "the newest N": (history(*done(1), *done(2), (3, ACCEPTED)), 3, 2, 0, False, [2, 3]),
    "the newest whole spans that fit in the image bound": (
        history(*done(1), *done(2), *done(3)), 3, 0, 250, False, [2, 3],
    ),
    "the newest span even when it alone is over the image bound": (
        history(*done(1), *done(2)), 2, 0, 50, False, [2],
    ),
    "the tighter of the two bounds": (history(*done(1), *done(2), *done(3)), 3, 1, 250, False, [3]),
    "refused spans never join (and take no room)": (
        history(*done(1), (2, REFUSED), *done(3, "refused-vs-served"), (4, ACCEPTED)),
        4, 0, 200, False, [1, 4],
    ),
    "the window before a new span leaves it out": (history(*done(1), *done(2)), 3, 0, 0, True, [1, 2]),
    "a cold-start refusal stays in the window": (
        history(*done(1, "refused-first-push"), (2, ACCEPTED)), 2, 0, 0, False, [1, 2],
    ),
    "later spans are not in an earlier span's window": (
        history(*done(1), *done(2), *done(3)), 2, 0, 0, False, [1, 2],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", WINDOWS)
def test_the_training_window(case: str):
    past, span, max_spans, max_images, before, expected = WINDOWS[case]
    assert window(span, past, max_spans, max_images, before) == expected


def test_a_new_span_is_compared_with_the_newest_usable_span_before_it():
    past = history(*done(1), (2, REFUSED), *done(3, "refused-vs-served"))
    assert previous_span(4, past) == 1
    assert previous_span(1, past) is None


def test_the_plan_says_what_it_chose_in_words():
    choice = choose_span([1, 2, 3], history(*done(1), (2, INGESTED), (2, REFUSED)))
    assert choice.describe() == "span 3 (new), compared with span 1; refused spans (never trained on): [2]"
    assert choose_span([1], history()).describe() == "span 1 (new), the first span: nothing to compare with"
