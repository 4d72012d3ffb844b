"""Shared fixtures: slices of the real Fashion-MNIST and pipeline runs on them, made once per session."""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # before any test module imports TensorFlow
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gzip
import shutil
from pathlib import Path

import pytest

from components.dataset import DEBIAN_DIR, OFFICIAL_FILES, prepare_dataset
from pipeline.config import EvaluationConfig, PipelineConfig, TrainingConfig
from pipeline.local_runner import run

SLICE_SIZE = 300


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
    """TFRecords of the first 300 training and 300 test images, prepared once."""
    out = tmp_path_factory.mktemp("slice") / "data"
    prepare_dataset(official_dir, out, limit=SLICE_SIZE)
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


def tiny_config(workdir: Path, data_dir: Path, accuracy_floor: float = 0.0) -> PipelineConfig:
    """A few training steps of a small CNN: enough to exercise every component, not to be accurate."""
    return PipelineConfig(
        workdir=str(workdir),
        data_dir=str(data_dir),
        training=TrainingConfig(
            epochs=1, max_steps_per_epoch=5, batch_size=32, conv_filters=(8, 16), dense_units=32
        ),
        evaluation=EvaluationConfig(accuracy_floor=accuracy_floor),
    )


def snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()
    }


def add_stray_files(data_dir: Path) -> None:
    """Files a user may leave beside the TFRecords; ImportExampleGen must not read them."""
    (data_dir / "test" / "notes.txt").write_text("not an example")
    shutil.copy(next((data_dir / "train").glob("*.tfrecord.gz")), data_dir / "train" / "backup.tfrecord")


@pytest.fixture(scope="session")
def pipeline_runs(slice_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    workdir = tmp_path_factory.mktemp("e2e")
    shutil.copytree(slice_data, workdir / "data")
    add_stray_files(workdir / "data")
    config = tiny_config(workdir, workdir / "data")
    first = run(config)
    served_after_first = snapshot(Path(config.serving_dir))
    second = run(config)
    served_after_second = snapshot(Path(config.serving_dir))

    strict = tiny_config(workdir, workdir / "data", accuracy_floor=0.99)
    strict.training.learning_rate = 1e-2  # a changed recipe: a new candidate is trained
    strict.evaluation.max_accuracy_drop = -1.0  # must beat the baseline by 1.0: the change gate fails too
    third = run(strict)
    return {
        "config": config,
        "first": first,
        "second": second,
        "third": third,
        "served_after_first": served_after_first,
        "served_after_second": served_after_second,
        "served_after_third": snapshot(Path(config.serving_dir)),
    }
