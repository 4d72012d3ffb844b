"""`fmnist drift` estimates accuracy on the batch with the version's own estimator, or says why not."""

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cli.main import main
from components.trainer import write_accuracy_estimator
from core import accuracy_estimate as ae
from core import idx
from core.errors import EXIT_BAD_INPUT, EXIT_DRIFT
from core.vocabulary import MAX_PIXEL, MODEL_NAME, PIXELS
from monitoring.drift import model_predictor
from monitoring.estimated_accuracy import ESTIMATED_ACCURACY
from monitoring.shifts import SHIFTS
from tests.components import prototype_model


def _official(official_dir: Path, name: str, parse) -> np.ndarray:
    return parse(gzip.decompress((official_dir / f"{name}.gz").read_bytes()), name)


@pytest.fixture(scope="module")
def served(official_dir: Path, tmp_path_factory) -> dict:
    """Version 7 of a model with its estimator (fitted on held-out test images), a reference and a batch."""
    train = _official(official_dir, "train-images-idx3-ubyte", idx.parse_images)[:2000]
    train_labels = _official(official_dir, "train-labels-idx1-ubyte", idx.parse_labels)[:2000]
    test = _official(official_dir, "t10k-images-idx3-ubyte", idx.parse_images)
    test_labels = _official(official_dir, "t10k-labels-idx1-ubyte", idx.parse_labels)
    root = tmp_path_factory.mktemp("drift")
    model_dir = prototype_model.build(str(root / "serving" / MODEL_NAME / "7"), train, train_labels)
    held_out = test[:600].reshape(600, PIXELS).astype(np.float32) / MAX_PIXEL, test_labels[:600]
    estimator = write_accuracy_estimator(model_dir, held_out, seed=0)
    np.save(root / "reference.npy", train[:1000])
    darker, _ = SHIFTS["darker (x0.7)"](test[1000:1400], test_labels[1000:1400])
    np.save(root / "batch.npy", darker)
    return {"root": root, "model_dir": model_dir, "estimator": estimator, "batch": darker}


def drift(served: dict, output: Path, *flags: str) -> tuple[int, dict]:
    root = served["root"]
    code = main(["drift", str(root / "batch.npy"), "--reference", str(root / "reference.npy"),
                 "--output", str(output), "--workdir", str(root / "work"), *flags])  # fmt: skip
    summary = output / "drift_summary.json"
    return code, json.loads(summary.read_text()) if summary.exists() else {}


def test_the_batch_is_estimated_with_the_estimator_the_version_was_exported_with(served, tmp_path, capsys):
    code, summary = drift(served, tmp_path / "report", "--model-dir", served["model_dir"])
    assert code in (0, EXIT_DRIFT)
    expected = served["estimator"].estimate(model_predictor(served["model_dir"])(served["batch"]))
    got = summary[ESTIMATED_ACCURACY]
    assert (got["value"], got["low"], got["high"]) == pytest.approx(
        (expected.value, expected.low, expected.high)
    )
    assert got["answers"] == "the model's answers" and got["estimator"]["version"] == 7
    wrong = round((1 - expected.value) * 1000)
    assert f"expect about {wrong:,} wrong answers per 1,000 requests like these" in capsys.readouterr().out


def test_a_version_exported_before_estimators_is_reported_plainly(served, tmp_path, capsys):
    old = tmp_path / "serving" / MODEL_NAME / "3"
    shutil.copytree(served["model_dir"], old)
    Path(ae.estimator_path(str(old))).unlink()
    code, summary = drift(served, tmp_path / "report", "--model-dir", str(old))
    assert code in (0, EXIT_DRIFT) and summary[ESTIMATED_ACCURACY]["value"] is None
    assert summary[ESTIMATED_ACCURACY]["not_estimated"].startswith("version 3 has no accuracy estimator")
    assert "accuracy not estimated: version 3 has no accuracy estimator" in capsys.readouterr().out


def test_a_version_with_an_outdated_estimator_gets_its_drift_report_and_no_estimate(served, tmp_path, capsys):
    old = tmp_path / "serving" / MODEL_NAME / "5"
    shutil.copytree(served["model_dir"], old)
    path = Path(ae.estimator_path(str(old)))
    path.write_text(path.read_text().replace(f'"format_version": {ae.FORMAT_VERSION}', '"format_version": 1'))
    code, summary = drift(served, tmp_path / "report", "--model-dir", str(old))
    assert code in (0, EXIT_DRIFT) and summary[ESTIMATED_ACCURACY]["value"] is None
    why = summary[ESTIMATED_ACCURACY]["not_estimated"]
    assert why.startswith("version 5's accuracy estimator is outdated")
    assert "accuracy estimator format 1" in why
    assert "accuracy not estimated: version 5's accuracy estimator is outdated" in capsys.readouterr().out


def test_without_a_model_nothing_is_estimated_and_the_report_says_why(served, tmp_path):
    _, summary = drift(served, tmp_path / "report")
    assert summary[ESTIMATED_ACCURACY]["not_estimated"].startswith("no model version given (--model-dir")


def test_a_broken_estimator_exits_2_naming_it_before_anything_is_written(served, tmp_path, capsys):
    broken = tmp_path / "serving" / MODEL_NAME / "4"
    shutil.copytree(served["model_dir"], broken)
    Path(ae.estimator_path(str(broken))).write_text("{not json")
    code, summary = drift(served, tmp_path / "report", "--model-dir", str(broken))
    assert code == EXIT_BAD_INPUT and summary == {}
    assert f"{ae.estimator_path(str(broken))}: not an accuracy estimator's JSON" in capsys.readouterr().err
    assert not (tmp_path / "report").exists()
