"""Shared fixtures: slices of the real Fashion-MNIST and pipeline runs on them, made once per session."""

import gzip
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from cli.main import quiet_tensorflow  # imports `core` first, which pins Keras before TensorFlow loads
from core.config import EvaluationConfig, PipelineConfig, SpansConfig, TrainingConfig, replace
from ingest.prepare import DEBIAN_DIR, OFFICIAL_FILES, prepare_dataset
from pipeline.local_runner import run

quiet_tensorflow(verbose=False)

SLICE_SIZE = 300  # images of each official split in the slice
SLICE_SPANS = 2  # the slice's training images arrive as two spans of 150


@pytest.fixture(scope="session")
def official_dir() -> Path:
    """The official IDX files; `.ci/run` installs Debian's dataset-fashion-mnist."""
    source = Path(os.environ.get("FMNIST_SOURCE_DIR", DEBIAN_DIR))
    if (
        not (source / "train-images-idx3-ubyte.gz").exists()
        and not (source / "train-images-idx3-ubyte").exists()
    ):
        pytest.fail(f"{source}: Fashion-MNIST IDX files missing; `apt-get install dataset-fashion-mnist`")
    return source


@pytest.fixture(scope="session")
def slice_data(official_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 300 training images as spans 1 and 2, and the first 300 test images as the gold set."""
    out = tmp_path_factory.mktemp("slice") / "data"
    prepare_dataset(official_dir, out, limit=SLICE_SIZE, spans=SLICE_SPANS)
    return out


@pytest.fixture
def source_copy(official_dir: Path, tmp_path: Path) -> Path:
    """A writable copy of the official files (decompressed), for tests that damage one."""
    copy = tmp_path / "source"
    copy.mkdir()
    for split in OFFICIAL_FILES.values():
        for f in split.values():
            packed = official_dir / f"{f.name}.gz"
            if packed.exists():
                with gzip.open(packed) as src, open(copy / f.name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            else:
                shutil.copy(official_dir / f.name, copy / f.name)
    return copy


def tiny_config(workdir: Path, data_dir: Path, accuracy_floor: float = 0.0, **training) -> PipelineConfig:
    """A few training steps of a small CNN: enough to exercise every component, not to be accurate.

    Beam runs in process (the slice is tiny); the gates are as wide as a
    near-random model on 150-image spans needs, so runs push unless a test
    narrows a gate on purpose.
    """
    return PipelineConfig(
        workdir=str(workdir),
        data_dir=str(data_dir),
        beam_direct_mode="in_memory",
        training=TrainingConfig(
            epochs=1,
            max_steps_per_epoch=5,
            batch_size=32,
            conv_filters=(8, 16),
            dense_units=32,
            warm_start_epochs=1,
            **training,
        ),  # fmt: skip
        evaluation=EvaluationConfig(accuracy_floor=accuracy_floor, max_accuracy_drop=1.0, max_class_drop=1.0),
        spans=SpansConfig(drift_jsd_threshold=0.3, label_linf_threshold=0.3, min_label_agreement=0.0),
    )


def snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()
    }


def add_stray_files(data_dir: Path) -> None:
    """Files a user may leave beside the TFRecords; ImportExampleGen must not read them."""
    (data_dir / "test" / "notes.txt").write_text("not an example")
    shutil.copy(next((data_dir / "span-1").glob("*.tfrecord.gz")), data_dir / "span-1" / "backup.tfrecord")


@pytest.fixture(scope="session")
def pipeline_runs(slice_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Four runs on one workdir, as the loop goes:

    1. span 1 arrives: every component runs, version A is pushed (stable and canary);
    2. span 2 arrives: the window is spans 1-2, warm-started from A and gated against A: B is the canary;
    3. nothing new: fully cached;
    4. a changed recipe that must beat the served model by a whole point: retrained, refused.
    """
    workdir = tmp_path_factory.mktemp("e2e")
    shutil.copytree(slice_data, workdir / "data")
    add_stray_files(workdir / "data")
    config = tiny_config(workdir, workdir / "data")
    served = Path(config.serving_dir)
    system_temp = tmp_path_factory.mktemp("system-temp")  # watched: a run must leave nothing here
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tempfile, "tempdir", str(system_temp))
        patch.setenv("TMPDIR", str(system_temp))
        first = run(config)
        served_after_first = snapshot(served)
        second = run(config)
        served_after_second = snapshot(served)
        third = run(config)
        served_after_third = snapshot(served)
        strict = replace(
            tiny_config(workdir, workdir / "data", accuracy_floor=0.99),
            training={"learning_rate": 1e-2},  # a changed recipe: a new candidate is trained
            # must beat the served model by a whole point overall and in every class: both change gates fail
            evaluation={"max_accuracy_drop": -1.0, "max_class_drop": -1.0},
        )
        fourth = run(strict)
    return {
        "config": config,
        "first": first,
        "second": second,
        "third": third,
        "fourth": fourth,
        "served_after_first": served_after_first,
        "served_after_second": served_after_second,
        "served_after_third": served_after_third,
        "served_after_fourth": snapshot(served),
        "left_in_system_temp": sorted(os.listdir(system_temp)),
    }
