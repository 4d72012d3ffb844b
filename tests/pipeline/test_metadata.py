"""A run finds its inputs in ML Metadata without reading the pipeline's whole history.

TFX 1.16's channel resolver intersects every execution of each context a
channel names, the pipeline's included; `fmnist run` has it ask one filter
query instead (`pipeline/metadata.py: executions_in_all_contexts`). Checked on
the metadata of the shared loop's six real runs.
"""

import itertools
from types import SimpleNamespace

import pytest
from tfx.orchestration.portable.input_resolution import channel_resolver

from pipeline.local_runner import resolve_channels_by_filter_query
from pipeline.metadata import NODE_CONTEXT, RUN_CONTEXT, Metadata, executions_in_all_contexts

pytestmark = pytest.mark.e2e  # reads the shared loop's runs


def in_every_context(store, contexts) -> list:
    """TFX's own way, as the reference: each context's executions read in full, then intersected."""
    found = None
    for context in contexts:
        executions = {e.id: e for e in store.get_executions_by_context(context.id)}
        found = executions if found is None else {i: e for i, e in found.items() if i in executions}
    return list((found or {}).values())


class HistoryGuard:
    """A store that fails the test if anything reads every execution of the pipeline's context."""

    def __init__(self, store, pipeline_context_id: int):
        self._store, self._pipeline = store, pipeline_context_id

    def __getattr__(self, name):
        return getattr(self._store, name)

    def get_executions_by_context(self, context_id, *args, **kwargs):
        assert context_id != self._pipeline, "read every execution the pipeline ever had"
        return self._store.get_executions_by_context(context_id, *args, **kwargs)


def test_the_filter_query_finds_exactly_the_executions_of_every_context_asked(pipeline_runs: dict):
    metadata = Metadata.open(pipeline_runs["config"])
    store, pipeline = metadata.store, metadata.pipeline_context()
    runs, nodes = metadata.runs(), store.get_contexts_by_type(NODE_CONTEXT)
    assert len(runs) == 6 and len(nodes) >= 20
    found_some = 0
    for run, node in itertools.product([None, *runs], nodes):
        contexts = [pipeline, node] if run is None else [pipeline, run, node]
        found = {e.id for e in executions_in_all_contexts(store, contexts)}
        assert found == {e.id for e in in_every_context(store, contexts)}, [c.name for c in contexts]
        found_some += bool(found)
    assert found_some > len(nodes)  # not only empty sets compared
    assert executions_in_all_contexts(store, []) == []


def channels_of_run(compiled, run_id: str):
    """Every input channel of the compiled pipeline, its run-context query filled in as the runner does."""
    for node in compiled.nodes:
        for spec in node.pipeline_node.inputs.inputs.values():
            for channel in spec.channels:
                filled = type(channel)()
                filled.CopyFrom(channel)
                for query in filled.context_queries:
                    if query.type.name == RUN_CONTEXT:
                        query.name.field_value.string_value = run_id
                yield node.pipeline_node.node_info.id, filled


def test_a_run_resolves_every_input_channel_as_tfx_does_without_reading_the_pipelines_history(
    pipeline_runs: dict, monkeypatch
):
    metadata = Metadata.open(pipeline_runs["config"])
    run = metadata.latest_run()  # after retention: what the next run would find
    channels = list(channels_of_run(pipeline_runs["compiled"], run.name))
    ids = lambda artifacts: sorted(a.id for a in artifacts)  # noqa: E731

    monkeypatch.setattr(channel_resolver, "_get_executions_by_all_contexts", in_every_context)
    expected = [ids(channel_resolver.resolve_single_channel(metadata, c)) for _, c in channels]

    resolve_channels_by_filter_query()
    guarded = SimpleNamespace(store=HistoryGuard(metadata.store, metadata.pipeline_context().id))
    resolved = [ids(channel_resolver.resolve_single_channel(guarded, c)) for _, c in channels]

    assert resolved == expected
    assert sum(map(bool, expected)) >= 20, "too few channels resolved to compare"
