"""The optional tuning switch: TFX's Tuner searches the stated space and the Trainer trains with its pick."""

import json
import shutil
from pathlib import Path

import pytest

from components.tuner import SEARCH_SPACE
from core.vocabulary import NUM_CLASSES
from pipeline import nodes
from pipeline.local_runner import run
from tests.conftest import tiny_config

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def tuned_run(slice_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    workdir = tmp_path_factory.mktemp("tuning_e2e")
    for part in ("test", "span-1"):
        shutil.copytree(slice_data / part, workdir / "data" / part)
    shutil.copy(slice_data / "manifest.json", workdir / "data" / "manifest.json")
    config = tiny_config(workdir, workdir / "data", tuner_trials=2, tuner_epochs=1)
    return config, run(config)


def test_tuning_runs_the_tuner_and_the_trainer_takes_its_best_hyperparameters(tuned_run: tuple):
    import tensorflow as tf

    config, report = tuned_run
    assert report.states()[nodes.TUNER] == "COMPLETE" and report.model.pushed
    (best_file,) = Path(config.pipeline_root, nodes.TUNER).rglob("best_hyperparameters.txt")
    best = json.loads(best_file.read_text())["values"]
    assert set(best) == set(SEARCH_SPACE) and all(best[k] in SEARCH_SPACE[k] for k in SEARCH_SPACE)

    served = tf.saved_model.load(report.model.pushed_path)
    shapes = {tuple(v.shape) for v in served.variables}
    assert (best["dense_units"], NUM_CLASSES) in shapes  # the output layer reads the tuned dense layer
    assert config.training.dense_units != best["dense_units"]  # not the configured width
