"""The model card's figures and pages, from a card made by hand (the e2e test reads one from a real run)."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.vocabulary import CLASS_NAMES
from pipeline.model_card import ModelCard, accuracies, calibration_error, weakest
from pipeline.model_card_page import HTML_FILE, JSON_FILE, MARKDOWN_FILE, PLOT_FILE, write_model_card
from tests.screenshot import screenshot

HISTORY = [{
    "time": "2026-12-02T10:00:00Z", "who": "ci@build", "action": "push", "reason": "pushed by the pipeline",
    "before": {"stable": 1, "canary": 1, "history": []}, "after": {"stable": 1, "canary": 2, "history": []},
}]  # fmt: skip


def matrix() -> np.ndarray:
    """1,000 gold images per class, 900 right and 100 taken for T-shirts (T-shirts for shirts); shirts 600."""
    m = np.diag(np.full(10, 900))
    m[:, 0] += 100
    m[0, 0] -= 100
    m[0, 6] += 100
    m[6, 6], m[6, 0] = 600, 400
    return m


def card() -> ModelCard:
    overall, per_class = accuracies(matrix())
    return ModelCard(
        model="fashion_mnist", version=2, pushed_destination="/srv/serving/fashion_mnist/2", role="canary",
        run="run-7", run_report=None,
        spans=[{"span": 1, "images": 2000, "source": "official training split"}, {"span": 4, "images": 300,
                                                                                      "source": None}],
        warm_started_from="version 1 (/srv/serving/fashion_mnist/1)", hyperparameters={"epochs": 1},
        overall=overall, per_class=per_class, calibration_error=0.031,
        calibration_source="TFMA's top-label metric",
        gates=["Evaluator: blessed on the gold test set; gold accuracy 0.8500", "serving check: passed"],
        weakest=weakest(overall, per_class),
        confused=[{"true": "Shirt", "predicted": "T-shirt/top", "examples": 400}],
        signatures=[{"name": "predict_images", "method": "tensorflow/serving/predict",
                     "inputs": [{"name": "images", "dtype": "uint8", "shape": "[?, 28, 28]"}],
                     "outputs": [{"name": "probabilities", "dtype": "float", "shape": "[?, 10]"}]}],
        history=HISTORY, history_file="/srv/serving/fashion_mnist/rollout_history.jsonl", missing=[],
    )  # fmt: skip


def test_accuracy_per_class_has_wilson_intervals_and_the_weakest_come_first():
    overall, per_class = accuracies(matrix())
    assert overall.examples == 10_000 and overall.right == 900 * 9 + 600
    shirt = per_class[CLASS_NAMES.index("Shirt")]
    assert (shirt.value, shirt.examples) == (0.6, 1000) and shirt.low < 0.6 < shirt.high
    assert shirt.high - shirt.low == pytest.approx(2 * 1.645 * (0.6 * 0.4 / 1000) ** 0.5, rel=0.02)
    assert [a.name for a in weakest(overall, per_class)] == ["Shirt"]  # the others are above overall


def test_calibration_error_weighs_each_bucket_by_its_images():
    buckets = [[0.5, 0.6, 100, 0.5, 0.55], [0.9, 1.0, 300, 0.95, 0.95], [0.0, 0.1, 0, 0.0, 0.0]]
    assert calibration_error(buckets) == pytest.approx(100 * 0.05 / 400)
    assert calibration_error([]) is None


def test_the_card_reads_in_a_browser(tmp_path: Path):
    paths = write_model_card(card(), str(tmp_path))
    assert set(paths) == {HTML_FILE, MARKDOWN_FILE, PLOT_FILE, JSON_FILE}
    markdown = (tmp_path / MARKDOWN_FILE).read_text()
    assert "| Shirt | 60.0% |" in markdown and "weak class Shirt: 60.0%" in markdown
    assert "weak class Trouser" not in markdown
    assert (
        "T-shirt/top taken for" not in markdown and "Shirt taken for T-shirt/top: 400 gold images" in markdown
    )
    assert "push: stable 1, canary 1 -> stable 1, canary 2" in markdown
    page = (tmp_path / HTML_FILE).read_text()
    assert page.count("<h2>") == 8 and "data:image/png;base64," in page
    picture = screenshot(tmp_path / HTML_FILE, tmp_path / "model_card.png")
    with Image.open(picture) as shot:
        top = np.asarray(shot.convert("RGB"))[:600]
    assert (np.abs(top.astype(int) - [0xC4, 0x4E, 0x52]).sum(axis=2) < 30).any()  # the weakest classes' bars
    print(f"model card screenshot: {picture}")
