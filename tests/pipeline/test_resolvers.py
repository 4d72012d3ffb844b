"""Which spans a run uses: TFX's SpanRangeStrategy over the spans that passed the gates."""

import pytest
from tfx.proto import range_config_pb2
from tfx.types import standard_artifacts

from pipeline.resolvers import SpanWindowStrategy


def examples(span: int, artifact_id: int) -> standard_artifacts.Examples:
    """An Examples artifact as ImportExampleGen 1.16 writes it: the span as a custom property."""
    artifact = standard_artifacts.Examples()
    artifact.id = artifact_id
    artifact.set_int_custom_property("span", span)
    return artifact


def resolve(spans_and_ids, num_spans: int = 0, exclude=(), before: int = 0) -> list[tuple[int, int]]:
    rolling = range_config_pb2.RollingRange(num_spans=num_spans or 1_000_000)
    strategy = SpanWindowStrategy(range_config_pb2.RangeConfig(rolling_range=rolling), list(exclude), before)
    found = strategy.resolve_artifacts(None, {"examples": [examples(s, i) for s, i in spans_and_ids]})
    if found is None:
        return []
    return sorted((a.get_int_custom_property("span"), a.id) for a in found["examples"])


def test_the_window_is_the_newest_n_spans():
    history = [(1, 10), (2, 20), (3, 30), (4, 40)]
    assert resolve(history) == [(1, 10), (2, 20), (3, 30), (4, 40)]  # 0: all spans
    assert resolve(history, num_spans=2) == [(3, 30), (4, 40)]


def test_refused_spans_never_join_a_window():
    history = [(1, 10), (2, 20), (3, 30), (4, 40)]
    assert resolve(history, exclude=[3]) == [(1, 10), (2, 20), (4, 40)]
    assert resolve(history, num_spans=3, exclude=[3]) == [(2, 20), (4, 40)]  # span numbers, not a count


def test_the_window_before_a_span_and_the_previous_span():
    history = [(1, 10), (2, 20), (3, 30)]
    assert resolve(history, before=3) == [(1, 10), (2, 20)]  # the window span 3 joins
    assert resolve(history, num_spans=1, before=3) == [(2, 20)]  # the span before it
    assert resolve(history, num_spans=1, before=1) == []  # the first span has none


def test_a_span_ingested_twice_counts_once_with_its_newest_artifact():
    assert resolve([(1, 10), (2, 20), (2, 25)]) == [(1, 10), (2, 25)]


@pytest.mark.parametrize("num_spans", [1, 2])
def test_nothing_ingested_resolves_nothing(num_spans: int):
    assert resolve([], num_spans=num_spans) == []
