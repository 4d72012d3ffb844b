"""The drift report as a person reads it: estimated accuracy by the verdict, features in words and units."""

import gzip
import json
import re
from pathlib import Path

import numpy as np
import pytest

from core import accuracy_estimate as ae
from core import idx
from core.config import DriftConfig
from core.errors import InputError
from core.image_features import FEATURE_MEANINGS, FEATURE_NAMES, GRID, INK_PIXEL, image_features
from core.vocabulary import CLASS_NAMES, NUM_CLASSES
from monitoring.batches import Batch
from monitoring.drift import MEANINGS, build_reference, check_drift, with_answers
from monitoring.drift_report import REPORT_FILE, SUMMARY_FILE, histogram_figure, write_report
from monitoring.estimated_accuracy import (
    ESTIMATED_ACCURACY,
    PER,
    estimate_accuracy,
    find_estimator,
    percent,
)
from monitoring.shifts import SHIFTS
from tests.screenshot import screenshot

DRIFT = DriftConfig()


def calibrated_answers(labels: np.ndarray, seed: int, sureness: float = 1.0) -> np.ndarray:
    """Probabilities of a calibrated model: top probability c, right with chance c (the rest spread evenly).

    `sureness` below 1 lowers every confidence (and accuracy with it), as a
    shift the model notices would.
    """
    rng = np.random.default_rng(seed)
    top = np.clip(rng.beta(6, 1, len(labels)) * sureness, 1 / NUM_CLASSES + 0.01, 1.0)
    right = rng.random(len(labels)) < top
    wrong_class = (labels + rng.integers(1, NUM_CLASSES, len(labels))) % NUM_CLASSES
    answered = np.where(right, labels, wrong_class)
    p = np.tile(((1 - top) / (NUM_CLASSES - 1))[:, None], (1, NUM_CLASSES))
    p[np.arange(len(labels)), answered] = top
    return p


@pytest.fixture(scope="module")
def case(official_dir: Path, tmp_path_factory) -> dict:
    """A reference of training images with a calibrated model's answers, its estimator, and a darker batch."""
    train = idx.parse_images(gzip.decompress((official_dir / "train-images-idx3-ubyte.gz").read_bytes()), "x")
    test = idx.parse_images(gzip.decompress((official_dir / "t10k-images-idx3-ubyte.gz").read_bytes()), "x")
    labels = idx.parse_labels(gzip.decompress((official_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()), "y")
    held_out = calibrated_answers(labels[:3000], seed=1)
    estimator = ae.fit(held_out, labels[:3000])
    model_dir = tmp_path_factory.mktemp("models") / "fashion_mnist" / "7"
    ae.save_estimator(estimator, ae.estimator_path(str(model_dir)))
    reference = with_answers(
        build_reference(train[:5000], None, None, DRIFT, "training images 0..4,999"), held_out, DRIFT
    )
    darker, batch_labels = SHIFTS["darker (x0.7)"](test[5000:5600], labels[5000:5600])
    answers = calibrated_answers(batch_labels, seed=2, sureness=0.8)
    result = check_drift(Batch(darker, "darker.npy", answers), reference, DRIFT, None)
    return {"model_dir": str(model_dir), "estimator": estimator, "reference": reference,
            "result": result, "answers": answers}  # fmt: skip


def report(case: dict, output: Path, accuracy) -> tuple[dict, str]:
    paths = write_report(case["result"], case["reference"], "darker.npy", str(output), accuracy, 7)
    return json.loads(Path(paths[SUMMARY_FILE]).read_text()), Path(paths[REPORT_FILE]).read_text()


@pytest.fixture(scope="module")
def estimated(case: dict, tmp_path_factory) -> dict:
    """The report with version 7's estimate of the batch's logged answers (all of them version 7's)."""
    found = find_estimator(case["model_dir"], "no model")
    accuracy = estimate_accuracy(found, case["answers"], "the logged answers", answered_by=(7,))
    output = tmp_path_factory.mktemp("report")
    summary, page = report(case, output, accuracy)
    return {"summary": summary, "page": page, "output": output}


def test_the_estimate_stands_beside_the_verdict_with_its_interval_per_class_and_meaning(case, estimated):
    summary, page = estimated["summary"], estimated["page"]

    expected = case["estimator"].estimate(case["answers"])
    got = summary[ESTIMATED_ACCURACY]
    assert (got["value"], got["low"], got["high"]) == (expected.value, expected.low, expected.high)
    assert got["method"] in ae.METHODS and set(got["per_class"]) == set(CLASS_NAMES)
    assert all(0 <= c["low"] <= c["value"] <= c["high"] <= 1 for c in got["per_class"].values() if c["value"])
    wrong = round((1 - expected.value) * PER)
    assert got["wrong_per_1000"]["expected"] == wrong and got["caution"] is None
    assert got["estimator"]["version"] == 7 and got["estimator"]["held_out_images"] == 3000

    top = page[page.index('<div class="top">') : page.index("<b>Batch:</b>")]
    assert "DRIFT:" in top and f"Estimated accuracy: {percent(expected.value)}" in top
    assert f"(90 % interval {percent(expected.low)} to {percent(expected.high)})" in top
    assert f"Expect about {wrong:,} wrong answers per 1,000 requests like these" in top
    for name, figure in expected.per_class.items():
        row = f"<tr><td>{name}</td><td>{figure.n:,}</td>"
        assert row + (f"<td>{percent(figure.value)}</td>" if figure.value else "<td colspan") in top


def test_a_version_without_an_estimator_is_said_plainly_in_both(case, tmp_path):
    old = tmp_path / "fashion_mnist" / "3"
    old.mkdir(parents=True)
    accuracy = estimate_accuracy(find_estimator(str(old), "no model"), case["answers"], "the logged answers")
    summary, page = report(case, tmp_path / "report", accuracy)
    got = summary[ESTIMATED_ACCURACY]
    assert got["value"] is got["low"] is got["high"] is got["method"] is None and got["per_class"] == {}
    assert got["not_estimated"].startswith("version 3 has no accuracy estimator")
    assert "Accuracy not estimated:</b><br>version 3 has no accuracy estimator" in page
    assert "Estimated accuracy" not in page


def test_a_broken_estimator_is_refused_naming_its_file(tmp_path: Path):
    model_dir = tmp_path / "9"
    path = Path(ae.estimator_path(str(model_dir)))
    path.parent.mkdir(parents=True)
    path.write_text('{"format_version": 1}')
    with pytest.raises(InputError, match=re.escape(str(path))):
        find_estimator(str(model_dir), "no model")


def test_answers_of_another_version_are_flagged(case):
    found = find_estimator(case["model_dir"], "no model")
    accuracy = estimate_accuracy(found, case["answers"], "the logged answers", answered_by=(7, 8))
    assert "version(s) 8, read with version 7's estimator" in accuracy.caution
    assert "--logged-version 7" in accuracy.to_dict()["caution"]


def test_every_feature_is_named_in_words_and_each_grid_cell_drawn(case, estimated):
    page = estimated["page"]
    assert "bin number" not in page
    for feature in case["result"].features:
        assert f"{MEANINGS[feature.feature].words} <code>{feature.feature}</code>" in page.replace(
            "&#x27;", "'"
        )
    for name in (n for n in FEATURE_NAMES if n.startswith("grid_")):
        row, col = FEATURE_MEANINGS[name].grid_cell
        assert f"row {row + 1}, column {col + 1} of a {GRID}x{GRID} grid" in FEATURE_MEANINGS[name].words
        picture = page[page.index(f"<title>row {row + 1}, column {col + 1} of the") :].split("</svg>")[0]
        filled = re.findall(r"<rect x='([\d.]+)' y='([\d.]+)'[^>]*fill='#d6604d'", picture)
        step = 42 / GRID
        assert [(float(x), float(y)) for x, y in filled] == [(col * step, row * step)]


@pytest.mark.parametrize(
    ("feature", "high", "unit"),
    [("mean_intensity", 255, "255 = white"), ("ink_fraction", 100, "%"), ("bbox_left", 27, "left edge")],
)
def test_histograms_are_drawn_in_the_features_own_units(case, feature: str, high: float, unit: str):
    figure = histogram_figure(case["result"], case["reference"], feature)
    axes = figure.axes[0]
    assert axes.get_xlim() == (0, high) and unit in axes.get_xlabel()
    reference_bars = axes.containers[0]
    width = high / DRIFT.bins
    assert sum(bar.get_height() for bar in reference_bars) == pytest.approx(1.0)  # shares of the reference
    assert reference_bars[0].get_x() + reference_bars[0].get_width() / 2 == pytest.approx(
        width * 0.5 - width * 0.2
    )


def test_the_words_say_what_the_code_measures():
    dim, bright = np.full((1, 28, 28), INK_PIXEL - 1, np.uint8), np.full((1, 28, 28), INK_PIXEL, np.uint8)
    assert image_features(dim)["ink_fraction"][0] == 0 and image_features(bright)["ink_fraction"][0] == 1
    assert f"{INK_PIXEL} or more of 255" in FEATURE_MEANINGS["ink_fraction"].words
    one = np.zeros((1, 28, 28), np.uint8)
    one[0, 9, 20] = 255  # row 9 from the top, column 20 from the left
    f = image_features(one)
    for name, pixels in (
        ("bbox_top", 9),
        ("bbox_bottom", 9),
        ("center_row", 9),
        ("bbox_left", 20),
        ("center_col", 20),
    ):
        assert f[name][0] * FEATURE_MEANINGS[name].scale == pytest.approx(pixels)
        edge = "top" if "row" in name or name in ("bbox_top", "bbox_bottom") else "left"
        assert f"pixels from the {edge} edge" in FEATURE_MEANINGS[name].axis


def test_a_person_sees_the_estimate_and_the_words_in_a_browser(estimated, tmp_path):
    """The page renders; with chromium-headless-shell installed, a screenshot of it is taken too."""
    page = estimated["page"]
    assert page.count("<figure>") >= 3 and "Expect about" in page and "4x4 grid" in page
    picture = screenshot(estimated["output"] / REPORT_FILE, tmp_path / "report.png")
    from PIL import Image

    with Image.open(picture) as shot:
        assert shot.size == (1300, 2400)
        top = np.asarray(shot.convert("RGB"))[:150]
    assert (np.abs(top.astype(int) - [0xB2, 0x18, 0x2B]).sum(axis=2) < 30).any()  # the red DRIFT verdict
    assert (
        np.abs(top.astype(int) - [0x21, 0x66, 0xAC]).sum(axis=2) < 30
    ).any()  # the estimate's frame beside it
