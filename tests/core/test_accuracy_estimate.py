"""The label-free accuracy estimate on simulated answers whose right and wrong are known.

A calibrated model is simulated exactly: random logits give the probabilities,
and each label is drawn from the answer's own probabilities, so a confidence
of 0.8 is right 80 % of the time. Shifts are simulated as harder inputs (less
spread logits) on which the model is overconfident (labels drawn from a flatter
distribution than the one it reports).
"""

import dataclasses
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from core import accuracy_estimate as ae
from core.errors import InputError
from core.vocabulary import ACCURACY_ESTIMATE_FILE, CLASS_NAMES, NUM_CLASSES

HELD_OUT, BATCH = 4000, 2000
SPREAD = 4.0  # logits' standard deviation in distribution
DRAWS = 200
SHIRT = 6


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def answers(
    rng: np.random.Generator, n: int, spread: float = SPREAD, overconfidence: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities the model reports and labels drawn from softmax(logits / overconfidence)."""
    logits = rng.normal(0, spread, (n, NUM_CLASSES))
    truth = softmax(logits / overconfidence)
    labels = np.minimum((truth.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1), NUM_CLASSES - 1)
    return softmax(logits), labels


def shirt_overconfident(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated answers, except that a tenth of those naming class 6 (Shirt) are wrong besides."""
    p, labels = answers(rng, n)
    shirts = np.flatnonzero(p.argmax(axis=1) == SHIRT)
    wrong = shirts[rng.random(len(shirts)) < 0.1]
    labels[wrong] = (SHIRT + 1 + rng.integers(0, NUM_CLASSES - 1, len(wrong))) % NUM_CLASSES
    return p, labels


def accuracy(p: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(p.argmax(axis=1) == labels))


def shifted_sets(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {f"{s}/{o}": answers(rng, BATCH, s, o) for s in (3.0, 2.5, 2.0) for o in (1.5, 2.0, 3.0)}


@pytest.fixture(scope="module")
def fitted() -> ae.Estimator:
    rng = np.random.default_rng(0)
    return ae.fit(*answers(rng, HELD_OUT), shifted_sets(rng))


def test_in_distribution_the_estimate_recovers_the_accuracy_within_chance():
    """Per class too, for a class the model is overconfident on (DoC's held-out offset corrects it)."""
    rng = np.random.default_rng(1)
    estimator = ae.fit(*shirt_overconfident(rng, HELD_OUT))
    p, labels = shirt_overconfident(rng, BATCH)
    reading = estimator.overall_reading(p)
    assert abs(reading.value - accuracy(p, labels)) <= 3 * reading.sd
    got = estimator.estimate(p)
    assert got.value == reading.value and got.n == BATCH and got.method == ae.METHOD_CLASS_MIX
    predicted = p.argmax(axis=1)
    for k, class_reading in enumerate(estimator.class_readings(p)):
        truth = float(np.mean(labels[predicted == k] == k))
        assert abs(class_reading.value - truth) <= 3 * class_reading.sd, CLASS_NAMES[k]


@pytest.mark.parametrize(("spread", "overconfidence"), [(3.0, 2.0), (2.5, 3.0)])
def test_under_shift_the_estimate_beats_mean_confidence_when_the_model_is_overconfident(
    spread, overconfidence
):
    rng = np.random.default_rng(2)
    estimator = ae.fit(*answers(rng, HELD_OUT))
    p, labels = answers(rng, BATCH, spread, overconfidence)
    truth = accuracy(p, labels)
    got = estimator.estimate(p)
    assert got.method == ae.METHOD_TRANSPORT  # changed inputs are not read as a change of class mix
    assert abs(got.value - truth) < abs(ae.mean_confidence(p) - truth)
    assert (
        ae.mean_confidence(p) - truth > 3 * estimator.overall_reading(p).sd
    )  # the baseline is off, not noisy


def test_in_distribution_the_interval_covers_at_the_claimed_rate():
    rng = np.random.default_rng(3)
    overall, per_class, errors = [], [], []
    for _ in range(DRAWS):
        estimator = ae.fit(*answers(rng, HELD_OUT // 2))
        p, labels = answers(rng, BATCH // 2)
        got = estimator.estimate(p)
        overall.append(got.low <= accuracy(p, labels) <= got.high)
        errors.append((got.value - accuracy(p, labels)) / estimator.overall_reading(p).sd)
        for k, name in enumerate(CLASS_NAMES):
            mine = got.per_class[name]
            if mine.value is not None:
                per_class.append(mine.low <= np.mean(labels[p.argmax(axis=1) == k] == k) <= mine.high)
    allowed = 3 * math.sqrt(ae.INTERVAL_LEVEL * (1 - ae.INTERVAL_LEVEL) / DRAWS)
    assert np.mean(overall) >= ae.INTERVAL_LEVEL - allowed
    assert np.mean(per_class) >= ae.INTERVAL_LEVEL - allowed
    assert np.mean(overall) < 1 and np.mean(per_class) < 1  # chance-sized, not vacuous
    assert np.std(errors) == pytest.approx(1, abs=0.15)  # the claimed standard deviation is the real one


def test_margins_fitted_on_shifts_make_the_interval_hold_where_chance_alone_does_not(fitted):
    assert fitted.margin_low > 0 and fitted.class_margin_low > 0
    rng = np.random.default_rng(4)
    fresh = shifted_sets(rng)  # new draws of the same kinds of shift
    assert fitted.fit_shifts == tuple(fresh)  # the estimator names what its margins were measured on
    widened, chance_only = [], []
    for p, labels in fresh.values():
        truth, got = accuracy(p, labels), fitted.estimate(p)
        low, high = fitted.overall_reading(p).interval(0.0, 0.0)
        widened.append(got.low <= truth <= got.high)
        chance_only.append(low <= truth <= high)
    assert np.mean(widened) >= ae.INTERVAL_LEVEL
    assert np.mean(chance_only) < ae.INTERVAL_LEVEL


def test_confident_answers_piling_onto_one_class_are_read_as_wrong_not_as_a_class_mix(fitted):
    """All answers name one class, confidently, yet do not look like that label's held-out answers:
    transport must carry all but the class's held-out share elsewhere, so the estimate falls to about
    that share (the ceiling), where mean confidence and ATC would stay high."""
    p, _ = answers(np.random.default_rng(5), BATCH * 5)
    confident = p[(p.argmax(axis=1) == 0) & (p.max(axis=1) > 0.99)]
    one_class = fitted.estimate(confident)
    assert one_class.method == ae.METHOD_TRANSPORT
    assert one_class.ceiling == pytest.approx(fitted.class_shares[0])
    assert one_class.value == pytest.approx(one_class.ceiling, abs=0.02)
    assert ae.mean_confidence(confident) > 0.99
    assert fitted.overall_reading(confident).pile_up > 0.7
    assert one_class.low < one_class.value < one_class.high


def test_a_change_of_class_mix_is_read_as_one_and_follows_each_labels_held_out_recall():
    """Requests that are mostly the class the model finds hardest: accuracy falls by the labels' recall,
    which the class-mix reading gives; transport, holding the held-out mix, would read the crowding of
    answers on that class as wrong and fall much further."""
    rng = np.random.default_rng(13)
    estimator = ae.fit(*shirt_overconfident(rng, HELD_OUT))
    p, labels = shirt_overconfident(rng, BATCH * 4)
    weights = np.where(labels == SHIRT, 1.0, 0.1)
    keep = rng.random(len(p)) < weights / weights.max()
    p, labels = p[keep], labels[keep]
    assert np.mean(labels == SHIRT) > 0.4
    got = estimator.estimate(p)
    assert got.method == ae.METHOD_CLASS_MIX
    reading = estimator.overall_reading(p)
    assert abs(got.value - accuracy(p, labels)) <= 3 * reading.sd
    assert got.low <= accuracy(p, labels) <= got.high
    transport = estimator.overall_reading(p, mix=None)
    assert accuracy(p, labels) - transport.value > 5 * reading.sd


def test_transport_credit_charges_only_answers_beyond_their_class_share():
    """Ten one-hot answers, one per class, against equal shares: nothing moves, all credited. The same
    answers all naming class 0: nine of ten must move at full cost."""
    spread = np.eye(NUM_CLASSES)
    shares = np.full(NUM_CLASSES, 1 / NUM_CLASSES)
    assert ae.transport_credit(spread, shares).mean() == pytest.approx(1, abs=0.01)
    piled = np.tile(np.eye(NUM_CLASSES)[0], (NUM_CLASSES, 1))
    assert ae.transport_credit(piled, shares).mean() == pytest.approx(0.1, abs=0.01)


def test_a_small_unshifted_batch_does_not_pile_up_by_chance(fitted):
    """Class shares of 200 answers stray from the held-out ones by chance; that is not a shift."""
    rng = np.random.default_rng(12)
    piled, strayed = [], []
    for _ in range(50):
        p, _ = answers(rng, 200)
        shares = np.bincount(p.argmax(axis=1), minlength=NUM_CLASSES) / len(p)
        strayed.append(np.maximum(shares - fitted.class_shares, 0).sum())
        piled.append(fitted.overall_reading(p, mix=None).pile_up)
    assert np.mean(piled) < 0.25 * np.mean(strayed)


def test_json_round_trip_and_files(fitted, tmp_path):
    again = ae.Estimator.from_json(fitted.to_json())
    assert again == fitted
    p, _ = answers(np.random.default_rng(6), BATCH)
    assert again.estimate(p) == fitted.estimate(p)
    path = str(tmp_path / "model" / ACCURACY_ESTIMATE_FILE)
    ae.save_estimator(fitted, path)
    assert ae.load_estimator(path) == fitted
    assert ae.estimator_path("gs://b/m/7") == f"gs://b/m/7/assets.extra/{ACCURACY_ESTIMATE_FILE}"


def test_per_class_figures_need_enough_answers_and_say_how_many(fitted):
    rng = np.random.default_rng(7)
    p, _ = answers(rng, BATCH)
    rare = np.flatnonzero(p.argmax(axis=1) == 3)
    few = ae.MIN_CLASS_EXAMPLES - 1
    batch = np.delete(p, rare[few:], axis=0)
    got = fitted.estimate(batch)
    dress = got.per_class[CLASS_NAMES[3]]
    assert dress == ae.ClassEstimate(None, None, None, few)
    assert sum(c.n for c in got.per_class.values()) == len(batch)
    others = [c for name, c in got.per_class.items() if name != CLASS_NAMES[3]]
    assert all(c.value is not None and c.low <= c.value <= c.high for c in others)
    assert set(got.to_dict()["per_class"][CLASS_NAMES[3]]) == {"value", "low", "high", "n"}


def test_the_threshold_puts_exactly_the_accuracy_above_it():
    scores = np.random.default_rng(8).normal(size=1000)
    correct = np.random.default_rng(9).random(1000) < 0.7
    t = ae.atc_threshold(scores, correct)
    assert np.mean(scores > t) == np.mean(correct)
    assert np.mean(scores > ae.atc_threshold(scores, np.ones(1000, bool))) == 1
    assert np.mean(scores > ae.atc_threshold(scores, np.zeros(1000, bool))) == 0


def test_scores():
    p = np.vstack([np.eye(NUM_CLASSES)[0], np.full(NUM_CLASSES, 1 / NUM_CLASSES)])
    assert ae.confidence_scores(p, ae.SCORE_NEGATIVE_ENTROPY) == pytest.approx([0, -math.log(NUM_CLASSES)])
    assert ae.confidence_scores(p, ae.SCORE_MAX_CONFIDENCE) == pytest.approx([1, 1 / NUM_CLASSES])
    with pytest.raises(InputError, match="unknown confidence score 'margin'"):
        ae.confidence_scores(p, "margin")


GOOD = softmax(np.random.default_rng(10).normal(size=(5, NUM_CLASSES)))


@pytest.mark.parametrize(
    ("probabilities", "message"),
    [
        (GOOD[:, :9], r"must be \[n >= 1, 10\], got \[5, 9\]"),
        (GOOD[0], r"got \[10\]"),
        (np.zeros((0, NUM_CLASSES)), r"got \[0, 10\]"),
        (np.log(GOOD), "not logits"),
        (np.where(np.eye(5, NUM_CLASSES, dtype=bool), np.nan, GOOD), "finite"),
        (GOOD * 0.5, "must sum to 1"),
    ],
)
def test_bad_probabilities_are_refused_with_the_reason(fitted, probabilities, message):
    with pytest.raises(InputError, match=message):
        fitted.estimate(probabilities)


def test_bad_labels_and_files_are_refused(fitted, tmp_path):
    with pytest.raises(InputError, match="labels must be 5 class ids"):
        ae.fit(GOOD, np.array([0, 1, 2, 3, 10]))
    with pytest.raises(InputError, match="labels must be 5 class ids"):
        ae.fit(GOOD, np.zeros(4, int))
    with pytest.raises(InputError, match="no accuracy estimator"):
        ae.load_estimator(str(tmp_path / "missing.json"))
    old = tmp_path / "old.json"
    old.write_text(fitted.to_json().replace(f'"format_version": {ae.FORMAT_VERSION}', '"format_version": 0'))
    with pytest.raises(InputError, match=f"{old}: accuracy estimator format 0"):
        ae.load_estimator(str(old))
    with pytest.raises(InputError, match="not an accuracy estimator"):
        ae.Estimator.from_json("[1, 2]")
    fields = dataclasses.asdict(fitted)
    del fields["cells"]
    with pytest.raises(InputError, match="cells"):
        ae.Estimator.from_json(json.dumps({"format_version": ae.FORMAT_VERSION, "method": "x", **fields}))
    with pytest.raises(InputError, match="needs 10 figures per class"):
        dataclasses.replace(fitted, class_offset=fitted.class_offset[:9])
    with pytest.raises(InputError, match="10 x 10 confusion shares"):
        dataclasses.replace(fitted, confusion=tuple(row[:9] for row in fitted.confusion))


def test_fit_from_model_answers_the_held_out_images_and_each_shift_of_them():
    """A toy model: class k is the brightest of ten bands of rows; fading the bands into fresh noise makes
    it less sure and less often right, as a shift should."""
    rng = np.random.default_rng(11)
    labels = rng.integers(0, NUM_CLASSES, 3000)
    images = rng.integers(0, 60, (3000, 28, 28)).astype(np.uint8)
    for k in range(NUM_CLASSES):
        images[labels == k, 2 * k + 4 : 2 * k + 6] += 8
    seen = []

    def predict(batch: np.ndarray) -> np.ndarray:
        seen.append(batch)
        bands = batch[:, 4:24].reshape(len(batch), NUM_CLASSES, -1).mean(axis=2)
        return softmax(bands / 2.0)

    def faded(contrast: float):
        return lambda x: np.clip(30 + (x - 30.0) * contrast + rng.normal(0, 10, x.shape), 0, 255).astype(
            np.uint8
        )

    shifts = {f"faded x{c}": faded(c) for c in (0.9, 0.7, 0.5, 0.3)}
    estimator = ae.fit_from_model(predict, images, labels, shifts)
    assert len(seen) == 1 + len(shifts) and estimator.fit_shifts == tuple(shifts)
    assert estimator.held_out_examples == len(images) and estimator.margin_low + estimator.margin_high > 0
    shifted, _ = predict(faded(0.6)(images)), seen.pop()  # a strength between two fitted ones
    truth = accuracy(shifted, labels)
    got = estimator.estimate(shifted)
    assert truth < estimator.held_out_accuracy and got.low <= truth <= got.high


def test_the_module_loads_no_tensorflow():
    """The server and every layer may import it cheaply (TensorFlow only when a file is saved or loaded)."""
    code = "import sys, core.accuracy_estimate; print('tensorflow' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
