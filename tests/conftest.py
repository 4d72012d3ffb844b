"""Shared fixtures: slices of the real Fashion-MNIST, prepared once per session."""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # before any test module imports TensorFlow
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gzip
import shutil
from pathlib import Path

import pytest

from components.dataset import DEBIAN_DIR, OFFICIAL_FILES, prepare_dataset

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
