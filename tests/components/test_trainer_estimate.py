"""The Trainer's accuracy estimator: fitted on held-out images through the exported model, written into it."""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from components.trainer import fit_sample, raw_images, write_accuracy_estimator
from core import accuracy_estimate as ae
from core.examples import read_labelled_images
from core.synthetic_shifts import FIT_SHIFTS
from core.vocabulary import (
    IMAGES_INPUT,
    IMAGES_SIGNATURE,
    MAX_PIXEL,
    PIXELS,
    PROBABILITIES_OUTPUT,
    TFRECORD_SUFFIX,
)
from serving.servable import load_version
from tests.components import prototype_model


@pytest.fixture(scope="module")
def exported(slice_data: Path, tmp_path_factory) -> dict:
    """A model of the slice's training spans, and the slice's test images as its held-out examples."""
    train = read_labelled_images(sorted(str(f) for f in slice_data.glob(f"span-*/*{TFRECORD_SUFFIX}")))
    held_out = read_labelled_images(sorted(str(f) for f in slice_data.glob(f"test/*{TFRECORD_SUFFIX}")))
    model_dir = str(tmp_path_factory.mktemp("export") / "serving_model_dir")
    prototype_model.build(model_dir, *train)
    return {"model_dir": model_dir, "images": held_out[0], "labels": held_out[1]}


def transformed(images: np.ndarray) -> np.ndarray:
    """What Transform hands the Trainer (`components/preprocessing.py`): float32 pixels / 255."""
    return images.reshape(len(images), PIXELS).astype(np.float32) / np.float32(MAX_PIXEL)


def test_the_exported_model_carries_an_estimator_fitted_on_its_served_answers(exported: dict):
    images, labels, model_dir = exported["images"], exported["labels"], exported["model_dir"]
    estimator = write_accuracy_estimator(model_dir, (transformed(images), labels), seed=3, cap=200)

    assert ae.load_estimator(ae.estimator_path(model_dir)) == estimator
    chosen = fit_sample(len(labels), 200, 3)
    served = tf.saved_model.load(model_dir).signatures[IMAGES_SIGNATURE]
    answers = served(**{IMAGES_INPUT: tf.constant(images[chosen])})[PROBABILITIES_OUTPUT].numpy()
    unwidened = ae.fit(answers, labels[chosen])  # the same answers, fitted without the shifts
    assert estimator.held_out_examples == 200
    assert estimator.held_out_accuracy == unwidened.held_out_accuracy
    assert estimator.held_out_spread == pytest.approx(unwidened.held_out_spread)
    assert estimator.confusion == unwidened.confusion
    assert estimator.fit_shifts == tuple(FIT_SHIFTS) and estimator.margin_low + estimator.margin_high > 0
    load_version("candidate", 1, model_dir)  # still loads, warmup included, as a server loads it


def test_raw_pixels_come_back_exactly_and_another_transform_is_refused():
    every_value = np.resize(np.arange(MAX_PIXEL + 1, dtype=np.uint8), (2, 28, 28))  # each value 0..255
    np.testing.assert_array_equal(raw_images(transformed(every_value)), every_value)
    with pytest.raises(ValueError, match="not raw pixels / 255"):
        raw_images(transformed(every_value) - 0.5)  # centred, as another preprocessing_fn might
    with pytest.raises(ValueError, match="not raw pixels / 255"):
        raw_images(transformed(every_value) * 0.7)


def test_the_fit_sample_is_capped_seeded_and_in_order():
    assert fit_sample(120, 200, seed=1).tolist() == list(range(120))
    sample = fit_sample(5934, 3000, seed=1)
    assert len(set(sample.tolist())) == 3000 and (np.diff(sample) > 0).all() and sample.max() < 5934
    assert sample.tolist() == fit_sample(5934, 3000, seed=1).tolist()
    assert sample.tolist() != fit_sample(5934, 3000, seed=2).tolist()


def test_the_run_report_summarises_the_fit_in_two_lines(exported: dict, tmp_path: Path):
    from pipeline.report import ModelFacts, RunReport, estimator_facts, format_report

    model_dir = exported["model_dir"]
    fitted = write_accuracy_estimator(
        model_dir, (transformed(exported["images"]), exported["labels"]), seed=1, cap=250
    )
    facts = estimator_facts(model_dir)
    assert facts["held_out_images"] == 250 and facts["held_out_accuracy"] == fitted.held_out_accuracy
    assert facts["margins"]["low"] == fitted.margin_low
    assert facts["class_mix_tolerance"] == fitted.class_mix_tolerance
    text = format_report(RunReport("r", model=ModelFacts(accuracy_estimator=facts)))
    lines = [line for line in text.splitlines() if "accuracy estimator" in line or "interval margins" in line]
    assert len(lines) == 2
    assert f"fitted on 250 held-out eval images, {fitted.held_out_accuracy:.4f} right there" in lines[0]
    assert f"overall {fitted.margin_low:.2f} down, {fitted.margin_high:.2f} up" in lines[1]
    assert estimator_facts(str(tmp_path)) is None  # a model exported before estimators: no lines
    Path(ae.estimator_path(str(tmp_path))).parent.mkdir(parents=True)
    Path(ae.estimator_path(str(tmp_path))).write_text("[]")
    assert "not an accuracy estimator's JSON" in estimator_facts(str(tmp_path))["problem"]
