"""Retention on the loop's runs (conftest `pipeline_runs`): what goes, what stays, and that nothing breaks.

The fixture applies the tightest policy after its changed-recipe run (keep only the newest run's outputs,
no versions beyond stable, canary and the way back), then runs once more with nothing new.
"""

from pathlib import Path

import pytest
from ml_metadata.proto import metadata_store_pb2

from core.ledger import ACCEPTED, read_ledger
from pipeline import nodes
from pipeline.lineage import format_lineage, lineage_of
from pipeline.metadata import RETENTION_PROPERTY, Metadata

pytestmark = pytest.mark.e2e


def test_retention_removes_what_no_run_version_or_window_needs_and_marks_it_deleted(pipeline_runs: dict):
    plan, config = pipeline_runs["retention"], pipeline_runs["config"]
    meta = Metadata.open(config)
    removed = [r for r in plan.removals if r.artifact_id is not None]
    assert removed and plan.bytes > 0
    for artifact in meta.store.get_artifacts_by_id([r.artifact_id for r in removed]):
        assert artifact.state == metadata_store_pb2.Artifact.DELETED, artifact
        assert artifact.custom_properties[RETENTION_PROPERTY].string_value.startswith(
            "removed by retention on"
        )
        assert not Path(artifact.uri).exists()
    span_examples = {  # every SpanExampleGen output, by span
        int(a.custom_properties["span"].int_value): a
        for e in meta.node_executions(nodes.SPAN_EXAMPLE_GEN)
        for a in meta.outputs(e.id, "examples")
    }
    deleted = {s for s, a in span_examples.items() if a.state == metadata_store_pb2.Artifact.DELETED}
    assert deleted == {2, 3}  # the refused spans; 1 and 4 are the window and the served versions' lineage
    accepted = {r.span for r in read_ledger(config.span_ledger) if r.event == ACCEPTED}
    assert all(Path(span_examples[s].uri).is_dir() for s in accepted)
    assert plan.kept_versions == tuple(
        sorted(int(pipeline_runs[n].model.pushed_version) for n in ("first", "second"))
    )
    root = Path(config.pipeline_root)
    for node in (nodes.DRIFT_GATE, nodes.LABEL_GATE):  # the refusals' own leftovers: gone after their run
        failed = [
            e for e in meta.node_executions(node) if e.last_known_state == metadata_store_pb2.Execution.FAILED
        ]
        patterns = [f"{node}/*/{e.id}" for e in failed] + [f"{node}/.system/*/{e.id}" for e in failed]
        assert failed and not [path for pattern in patterns for path in root.glob(pattern)]


def test_after_retention_both_served_versions_keep_their_whole_lineage(pipeline_runs: dict):
    config = pipeline_runs["config"]
    for name in ("first", "second"):
        chain = lineage_of(config, int(pipeline_runs[name].model.pushed_version))
        assert chain.removed == [] and chain.evaluation.accuracy is not None
        assert chain.image_statistics_uri and Path(chain.image_statistics_uri).is_dir()  # the drift reference
        assert "REMOVED" not in format_lineage(chain)
    assert pipeline_runs["third"].states()[nodes.TRAINER] == "CACHED"  # and the cache still holds


def test_fmnist_retention_dry_run_lists_what_would_go_and_deletes_nothing(pipeline_runs: dict, capsys):
    from cli.main import main

    config = pipeline_runs["config"]
    before = sorted(Path(config.pipeline_root).rglob("*"))
    argv = ["retention", "--workdir", config.workdir, "--dry-run", "--keep-runs", "1", "--keep-days", "0"]
    assert main([*argv, "--window-images", "0"]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].startswith("would free ")
    assert sorted(Path(config.pipeline_root).rglob("*")) == before
