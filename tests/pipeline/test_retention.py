"""Retention without a pipeline run: which model versions stay, and a clean-up killed half way is finished."""

import json
from pathlib import Path

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2

from core.config import PipelineConfig, replace
from pipeline.metadata import RETENTION_PROPERTY, connection_config
from pipeline.retention import REMOVED_PREFIX, apply_retention, plan_retention


def serving_dir_with(root: Path, versions: list[int], rollout: dict) -> PipelineConfig:
    config = replace(PipelineConfig(workdir=str(root)), retention={"keep_versions": 2})
    model_dir = Path(config.model_serving_dir)
    for version in versions:
        (model_dir / str(version)).mkdir(parents=True)
        (model_dir / str(version) / "saved_model.pb").write_bytes(b"x" * version)
    (model_dir / "rollout.json").write_text(json.dumps(rollout))
    return config


def test_versions_leave_the_serving_directory_only_when_nothing_holds_them(tmp_path: Path):
    config = serving_dir_with(tmp_path, list(range(1, 9)), {"stable": 5, "canary": 8, "history": [2, 3, 4]})
    plan = plan_retention(config)
    # held: stable 5, canary 8, the way back 4 (and the earlier stable 3: the last two), the newest two 7, 8
    assert plan.kept_versions == (3, 4, 5, 7, 8)
    assert sorted(r.version for r in plan.removals if r.version) == [1, 2, 6]
    assert plan_retention(config).bytes == 1 + 2 + 6  # the plan measures before anything goes
    apply_retention(config)
    left = sorted(p.name for p in Path(config.model_serving_dir).iterdir())
    assert left == ["3", "4", "5", "7", "8", "rollout.json"]


def test_a_version_caught_half_deleted_is_finished_by_the_next_clean_up(tmp_path: Path):
    config = serving_dir_with(tmp_path, [1, 2], {"stable": 2, "canary": 2, "history": [1]})
    half = Path(config.model_serving_dir) / f"{REMOVED_PREFIX}7"  # killed between rename and delete
    (half / "variables").mkdir(parents=True)
    assert [r.path for r in plan_retention(config).removals] == [str(half)]
    apply_retention(config)
    assert not half.exists() and (Path(config.model_serving_dir) / "1").exists()  # 1 is the way back


def test_artifacts_a_killed_clean_up_marked_are_deleted_by_the_next(tmp_path: Path):
    """Marked for deletion, files maybe still there: the next clean-up removes them and marks them DELETED."""
    config = PipelineConfig(workdir=str(tmp_path))
    Path(config.pipeline_root).mkdir(parents=True)
    store = mlmd.MetadataStore(connection_config(config))
    pipeline_type = store.put_context_type(metadata_store_pb2.ContextType(name="pipeline"))
    [context] = store.put_contexts(
        [metadata_store_pb2.Context(type_id=pipeline_type, name=config.pipeline_name)]
    )
    examples_type = store.put_artifact_type(metadata_store_pb2.ArtifactType(name="Examples"))
    left = Path(config.pipeline_root) / "Transform" / "transformed_examples" / "7"
    (left / "Split-train").mkdir(parents=True)
    (left / "Split-train" / "part.gz").write_bytes(b"half of what a killed clean-up meant to delete")
    artifact = metadata_store_pb2.Artifact(
        type_id=examples_type, uri=str(left), state=metadata_store_pb2.Artifact.MARKED_FOR_DELETION
    )
    [artifact_id] = store.put_artifacts([artifact])
    store.put_attributions_and_associations(
        [metadata_store_pb2.Attribution(artifact_id=artifact_id, context_id=context)], []
    )
    del store
    apply_retention(config)
    [after] = mlmd.MetadataStore(connection_config(config)).get_artifacts_by_id([artifact_id])
    assert after.state == metadata_store_pb2.Artifact.DELETED and not left.exists()
    assert after.custom_properties[RETENTION_PROPERTY].string_value.startswith("removed by retention on ")
