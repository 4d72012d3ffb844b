"""Shared fixtures: slices of the real Fashion-MNIST and pipeline runs on them, made once per session."""

import gzip
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from cli.main import quiet_tensorflow  # imports `core` first, which pins Keras before TensorFlow loads
from core.config import EvaluationConfig, PipelineConfig, SpansConfig, TrainingConfig, replace
from ingest.prepare import DEBIAN_DIR, OFFICIAL_FILES, parse_split, prepare_dataset, read_split
from pipeline.local_runner import PipelineFailedError

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
        spans=SpansConfig(
            drift_jsd_threshold=0.3, label_linf_threshold=0.3, min_relative_label_agreement=0.0
        ),
    )


def snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()
    }


def add_stray_files(data_dir: Path) -> None:
    """Files a user may leave beside the TFRecords; ImportExampleGen must not read them."""
    (data_dir / "test" / "notes.txt").write_text("not an example")
    shutil.copy(next((data_dir / "span-1").glob("*.tfrecord.gz")), data_dir / "span-1" / "backup.tfrecord")


LOOP_FIRST_SPAN = 2000  # enough images for a first model the label gate can lean on
LOOP_LATER_SPAN = 300


def official_training_images(official_dir: Path, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `count` images and labels of the official training split (verified)."""
    data = read_split(official_dir, OFFICIAL_FILES["train"])
    images, labels = parse_split(data, "train", OFFICIAL_FILES["train"])
    return images[:count], labels[:count]


def loop_config(workdir: Path, **changes) -> PipelineConfig:
    """The tiny configuration, with a first model good enough that shuffled labels show (60 steps), and the
    label gate at its default."""
    base = tiny_config(workdir, workdir / "data")
    return replace(
        base,
        training={"max_steps_per_epoch": 60},
        spans={"min_relative_label_agreement": SpansConfig().min_relative_label_agreement},
        **changes,
    )


@pytest.fixture(scope="session")
def pipeline_runs(official_dir: Path, slice_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The loop as a user meets it, from ONE compiled pipeline run again and again (LocalDagRunner):

    1. span 1 (2,000 real images) arrives: every component runs, version A is pushed (stable, canary);
    then spans 2, 3 and 4 arrive at once and the next runs take them in order:
    2. span 2, span 4's images inverted: the drift gate refuses it;
    3. span 3, real images with shuffled labels: the label gate (the served model A) refuses it;
    4. span 4, real images: window spans 1 and 4, warm-started from A, gated against A: B is the canary;
    5. a changed recipe (compiled from its own configuration) that must beat the served model by a whole
       point: retrained on span 4's window, refused;
    then retention with the tightest policy (the newest run, no extra versions), and
    6. nothing new: fully cached all the same.
    """
    from ingest.spans import write_span
    from pipeline.local_runner import compile_pipeline, run_compiled
    from pipeline.retention import apply_retention

    workdir = tmp_path_factory.mktemp("e2e")
    data = workdir / "data"
    shutil.copytree(slice_data, data)
    for span in sorted(data.glob("span-*")):
        shutil.rmtree(span)
    images, labels = official_training_images(official_dir, LOOP_FIRST_SPAN + LOOP_LATER_SPAN)
    write_span(str(data), images[:LOOP_FIRST_SPAN], labels[:LOOP_FIRST_SPAN], LOOP_SOURCE, span=1)
    add_stray_files(data)
    config = loop_config(workdir)
    compiled = compile_pipeline(config)
    served = Path(config.serving_dir)
    system_temp = tmp_path_factory.mktemp("system-temp")  # watched: a run must leave nothing here
    runs, snapshots = {}, {}

    def run_once(name: str, run_config: PipelineConfig = config, ir=compiled) -> None:
        try:
            runs[name] = run_compiled(run_config, ir)
        except PipelineFailedError as failure:
            runs[name] = failure
        snapshots[name] = snapshot(served)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tempfile, "tempdir", str(system_temp))
        patch.setenv("TMPDIR", str(system_temp))
        run_once("first")
        later = images[LOOP_FIRST_SPAN:], labels[LOOP_FIRST_SPAN:]
        write_span(str(data), 255 - later[0], later[1], "span 4's images, inverted", span=2)
        shuffled = np.random.default_rng(7).permutation(later[1])
        write_span(str(data), later[0], shuffled, "span 4's images, labels shuffled", span=3)
        write_span(str(data), *later, "official training split, images 2000-2299", span=4)
        for name in ("drifted", "mislabelled", "second"):
            run_once(name)
        strict = loop_config(
            workdir,
            evaluation={"accuracy_floor": 0.99, "max_accuracy_drop": -1.0, "max_class_drop": -1.0},
        )
        strict = replace(strict, training={"learning_rate": 1e-2})  # a changed recipe: a new candidate
        run_once("fourth", strict, compile_pipeline(strict))
        tight = replace(config, retention={"keep_runs": 1, "keep_days": 0.0, "keep_versions": 0})
        cleaned = apply_retention(tight)
        run_once("third")
    return {
        "config": config,
        "compiled": compiled,
        "retention": cleaned,
        **runs,
        **{f"served_after_{name}": files for name, files in snapshots.items()},
        "left_in_system_temp": sorted(os.listdir(system_temp)),
    }


LOOP_SOURCE = "official training split, images 0-1999"
