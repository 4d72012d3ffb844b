"""The served model's accuracy on a batch, estimated from its probabilities alone, with a 90 % interval.

Overall: Average Thresholded Confidence on negative entropy (ATC-NE; Garg et
al., "Leveraging Unlabeled Data to Predict Out-of-Distribution Performance",
ICLR 2022). On held-out labelled data of the model's own training run a
threshold t is fitted so that the share of answers whose negative entropy
exceeds t equals the held-out accuracy; on a new batch the estimate is the share
above t. Per predicted class: difference of confidences (DoC; Guillory et
al., "Predicting with Confidence on Unseen Distributions", ICCV 2021), the
mean top probability of the answers naming the class, moved by the gap between
the class's precision and its mean confidence on the held-out answers.

Why (`benchmarks/accuracy_estimate_benchmark.py`, results/accuracy_estimate.json:
29 shifted copies of the official test set, 10 kinds, model 1796195743 fitted
on its 5,934 eval images). Mean absolute error over the 29: ATC-NE 9.6 points,
ATC on the top probability (ATC-MC) 11.0, mean confidence 13.3, DoC 13.2 (it
only offsets mean confidence, the model being calibrated). Where accuracy fell
below 70 % (10 cases) ATC-NE erred by 17.5 points against 30.9 for mean
confidence: this is where an estimate matters. On milder shifts mean confidence
was closer (4.0 against 5.4 points over 19 cases): negative entropy reads
answers that spread some probability over a second class as wrong, so ATC-NE
underestimates slight rotation, brightening and contrast loss by 7 to 9 points. Per
predicted class, ATC with thresholds of each class erred by 15.9 points, mean
confidence by 10.9 and DoC by 10.8; DoC also corrects each class's calibration
gap in distribution (up to 2 points here).

The interval. The batch's sampling error alone (a few tenths of a point at
10,000 images) is far too narrow under shift, where the error is bias, so

    low  = value - z * sd - margin_low  * max(departure, pile_up)
    high = value + z * sd + margin_high * departure

- sd: chance alone (`chance_sd`): which of the batch's answers are right,
  given their confidences; how far the thresholded count strays from the
  confidences in a sample of this size; and the held-out sample the estimate
  was fitted on; z for 90 %;
- departure: |held-out figure - estimate|, how far the estimate moved: the
  further, the larger the shift and the estimate's error;
- pile_up: how far the answers crowd onto fewer classes than the held-out
  labels hold (total variation from the held-out class shares; per class, the
  share of the class's answers beyond its held-out share), less what chance
  gives a batch of this size. A model made
  confidently wrong answers one class for everything: its confidence does not
  fall, but its answers pile up. Under a true change of class mix they pile up
  too, and the interval widens downwards needlessly: from probabilities alone
  the two cannot be told apart (`Estimate.ceiling` gives the other reading);
- margin_low, margin_high: the estimator's own error per unit of those,
  measured at fit time on synthetic shifts of the held-out images
  (`core/synthetic_shifts.py`, other kinds than the benchmark's), at the
  split-conformal 95 % level per side (90 % two-sided).

How it holds (same benchmark): the interval held the truth in 23 of the 29
shifted cases (79 %; an interval of chance alone: 21 %), mean width 28
points, and on the clean test set (width 1.5 points); per class in 85 % of
274 figures. On simulated calibrated answers without shift it covers 88-90 %
(tests/core/test_accuracy_estimate.py). On the fit-time kinds it covers all,
by construction: the margins are the largest error seen there, and kinds of
shift never seen can be worse. Where it fails: answers that stay confident and
do not pile up (a share of inverted images: 0 of 3 held; a flat low-contrast
copy: estimate 0.72, truth 0.25) leave the estimate and the whole interval too
high; rotation leaves many answers right but unsure (8 and 15 degrees: truth
0.91 and 0.81, estimates 0.82 and 0.53), the interval too low.

numpy only at import (no TensorFlow): every layer may use it, the server
included. Saving and loading go through `core/storage.py`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from core import storage
from core.errors import InputError
from core.vocabulary import ACCURACY_ESTIMATE_FILE, ASSETS_EXTRA_DIR, CLASS_NAMES, NUM_CLASSES

SCORE_NEGATIVE_ENTROPY, SCORE_MAX_CONFIDENCE = "negative_entropy", "max_confidence"
METHODS = {  # the overall score -> the method's name in estimates and reports
    SCORE_NEGATIVE_ENTROPY: "ATC-NE (per class: DoC)",
    SCORE_MAX_CONFIDENCE: "ATC-MC (per class: DoC)",
}
METHOD = METHODS[SCORE_NEGATIVE_ENTROPY]  # the chosen one
INTERVAL_LEVEL = 0.90
SIDE_LEVEL = 0.95  # each side misses at most 5 %: 90 % two-sided
Z_90 = 1.6448536269514722  # scipy.stats.norm.ppf(0.95)
MIN_CLASS_EXAMPLES = 30  # fewer answers of a predicted class: no per-class figure
FORMAT_VERSION = 1
PROBABILITY_TOLERANCE = 1e-3  # rows of float32 softmax sum to 1 within far less


@dataclass(frozen=True)
class ClassEstimate:
    """Estimated accuracy of the answers naming one class (its precision); None when too few."""

    value: float | None
    low: float | None
    high: float | None
    n: int


@dataclass(frozen=True)
class Estimate:
    """A batch's estimated accuracy (fractions), its 90 % interval, and per predicted class.

    `ceiling`: the highest accuracy the batch can have if its true class mix is
    the held-out one (sum over classes of the smaller of the answer share and
    the held-out share). When the inputs drifted but the class mix of requests
    is known not to have changed, it is a bound; after a real change of class
    mix it means nothing.
    """

    value: float
    low: float
    high: float
    per_class: dict[str, ClassEstimate]
    method: str
    n: int
    ceiling: float

    def to_dict(self) -> dict:
        """Plain JSON types: the drift report's `estimated_accuracy` object."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Reading:
    """One figure before its margins: the estimate and what its interval is built from."""

    value: float
    sd: float  # chance alone
    departure: float  # |held-out figure - value|
    pile_up: float  # answers beyond the held-out class shares

    def interval(self, margin_low: float, margin_high: float) -> tuple[float, float]:
        low = self.value - Z_90 * self.sd - margin_low * max(self.departure, self.pile_up)
        high = self.value + Z_90 * self.sd + margin_high * self.departure
        return max(0.0, low), min(1.0, high)

    def needed_margins(self, truth: float) -> tuple[float, float]:
        """The smallest (low, high) margins whose interval would have held `truth`."""
        below = self.value - Z_90 * self.sd - truth
        above = truth - self.value - Z_90 * self.sd
        return (
            max(0.0, below) / max(self.departure, self.pile_up, 1e-9),
            max(0.0, above) / max(self.departure, 1e-9),
        )


@dataclass(frozen=True)
class Estimator:
    """What `fit` learnt from held-out answers; `estimate` applies it to a batch. JSON round trip."""

    score: str
    threshold: float
    held_out_examples: int
    held_out_accuracy: float
    held_out_spread: float  # mean of (above threshold - right)^2 over held-out answers
    class_shares: tuple[float, ...]  # held-out labels per class
    class_counts: tuple[int, ...]  # held-out answers per predicted class
    # Per predicted class (None below MIN_CLASS_EXAMPLES held-out answers): precision, precision minus
    # mean confidence (DoC's offset), and the mean of (confidence - right)^2.
    class_precision: tuple[float | None, ...]
    class_offset: tuple[float | None, ...]
    class_spread: tuple[float | None, ...]
    margin_low: float = 0.0
    margin_high: float = 0.0
    class_margin_low: float = 0.0
    class_margin_high: float = 0.0
    fit_shifts: tuple[str, ...] = ()
    class_names: tuple[str, ...] = CLASS_NAMES
    min_class_examples: int = MIN_CLASS_EXAMPLES

    def __post_init__(self):
        if self.score not in METHODS:
            raise InputError(f"unknown confidence score {self.score!r}; one of {list(METHODS)}")
        per_class = (
            self.class_shares,
            self.class_counts,
            self.class_precision,
            self.class_offset,
            self.class_spread,
        )
        if len(self.class_names) != NUM_CLASSES or any(len(v) != NUM_CLASSES for v in per_class):
            raise InputError(f"an accuracy estimator needs {NUM_CLASSES} figures per class")

    @property
    def method(self) -> str:
        return METHODS[self.score]

    def estimate(self, probabilities: np.ndarray) -> Estimate:
        """The batch's estimated accuracy overall and per predicted class, each with its 90 % interval."""
        p = checked_probabilities(probabilities)
        low, high = (overall := self.overall_reading(p)).interval(self.margin_low, self.margin_high)
        counts = np.bincount(p.argmax(axis=1), minlength=NUM_CLASSES)
        readings = self.class_readings(p)
        per_class = {
            name: self._class_estimate(reading, int(count))
            for name, reading, count in zip(self.class_names, readings, counts, strict=True)
        }
        ceiling = float(np.minimum(counts / len(p), self.class_shares).sum())
        return Estimate(overall.value, low, high, per_class, self.method, len(p), ceiling)

    def _class_estimate(self, reading: Reading | None, count: int) -> ClassEstimate:
        if reading is None:
            return ClassEstimate(None, None, None, count)
        return ClassEstimate(
            reading.value, *reading.interval(self.class_margin_low, self.class_margin_high), count
        )

    def overall_reading(self, p: np.ndarray) -> Reading:
        """ATC on checked probabilities, before margins."""
        above = (confidence_scores(p, self.score) > self.threshold).astype(np.float64)
        value = float(above.mean())
        shares = np.bincount(p.argmax(axis=1), minlength=NUM_CLASSES) / len(p)
        return Reading(
            value=value,
            sd=chance_sd(p.max(axis=1), above, self.held_out_spread / self.held_out_examples),
            departure=abs(self.held_out_accuracy - value),
            pile_up=max(
                0.0, float(np.sum(np.maximum(shares - self.class_shares, 0) - self._chance_excess(len(p))))
            ),
        )

    def class_readings(self, p: np.ndarray) -> list[Reading | None]:
        """Per predicted class, DoC before margins; None with too few answers here or held out."""
        predicted, confidence = p.argmax(axis=1), p.max(axis=1)
        chance = self._chance_excess(len(p))
        readings: list[Reading | None] = []
        for k in range(NUM_CLASSES):
            mine = confidence[predicted == k]
            precision, offset, spread = self.class_precision[k], self.class_offset[k], self.class_spread[k]
            if len(mine) < self.min_class_examples or precision is None or offset is None or spread is None:
                readings.append(None)
                continue
            value = min(1.0, max(0.0, float(mine.mean()) + offset))
            readings.append(Reading(
                value=value,
                sd=chance_sd(mine, mine, spread / self.class_counts[k]),
                departure=abs(precision - value),
                pile_up=max(0.0, len(mine) / len(p) - self.class_shares[k] - chance[k]) * len(p) / len(mine),
            ))  # fmt: skip
        return readings

    def _chance_excess(self, n: int) -> np.ndarray:
        """Per class, how far a batch of n answers exceeds the held-out share by chance alone, on average.

        A class's share in a batch and in the held-out answers are both samples;
        their difference is about normal, and the mean of its positive part is
        sd / sqrt(2 pi). Subtracted from the pile-up, so that a small batch of
        unshifted answers does not widen its interval for nothing.
        """
        shares = np.asarray(self.class_shares)
        sd = np.sqrt(shares * (1 - shares) * (1 / n + 1 / self.held_out_examples))
        return sd / math.sqrt(2 * math.pi)

    def to_json(self) -> str:
        return json.dumps(
            {"format_version": FORMAT_VERSION, "method": self.method, **dataclasses.asdict(self)}, indent=1
        )

    @classmethod
    def from_json(cls, text: str) -> Estimator:
        """The estimator `to_json` wrote; another format or missing fields is an InputError."""
        try:
            fields = json.loads(text)
            version = fields.pop("format_version")
            fields.pop("method")
        except (ValueError, KeyError, AttributeError, TypeError) as err:
            raise InputError(f"not an accuracy estimator's JSON ({err})") from err
        if version != FORMAT_VERSION:
            raise InputError(f"accuracy estimator format {version}; this code reads {FORMAT_VERSION}")
        tuples = {f.name for f in dataclasses.fields(cls) if str(f.type).startswith("tuple")}
        try:
            return cls(**{k: tuple(v) if k in tuples else v for k, v in fields.items()})
        except TypeError as err:
            raise InputError(f"accuracy estimator's JSON: {err}") from err


# --- scores --------------------------------------------------------------------------------------
def checked_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """float64 [n, 10] rows of probabilities, or an InputError that says what is wrong."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != NUM_CLASSES or len(p) == 0:
        raise InputError(f"probabilities must be [n >= 1, {NUM_CLASSES}], got {list(p.shape)}")
    if not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
        raise InputError("probabilities must be finite and within 0..1 (softmax outputs, not logits)")
    worst = float(np.max(np.abs(p.sum(axis=1) - 1)))
    if worst > PROBABILITY_TOLERANCE:
        raise InputError(f"each row of probabilities must sum to 1; one is off by {worst:.3g}")
    return p


def confidence_scores(p: np.ndarray, score: str) -> np.ndarray:
    """Per answer: the top probability, or the negative entropy (0 one-hot, -log 10 uniform)."""
    if score == SCORE_MAX_CONFIDENCE:
        return p.max(axis=1)
    if score == SCORE_NEGATIVE_ENTROPY:
        return np.sum(p * np.log(np.where(p > 0, p, 1.0)), axis=1)
    raise InputError(f"unknown confidence score {score!r}; one of {list(METHODS)}")


def mean_confidence(probabilities: np.ndarray) -> float:
    """The baseline: the mean top probability, which a calibrated model's accuracy equals in distribution."""
    return float(checked_probabilities(probabilities).max(axis=1).mean())


def chance_sd(confidence: np.ndarray, credited: np.ndarray, fit_variance: float) -> float:
    """Standard deviation, as a fraction, of an estimate's error from chance alone (no shift).

    The estimate credits answer i with `credited[i]` (1 or 0 above or below
    ATC's threshold; its confidence for DoC) and is right in distribution.
    Three parts: which answers are right, given confidences c, varies by
    sum c (1 - c) (the model being calibrated); how far the credits stray
    from the confidences varies with the batch (0 for DoC); and what was fitted
    on held-out answers is a sample (`fit_variance`, per answer spread / count).
    """
    n = len(confidence)
    right = float(np.sum(confidence * (1 - confidence))) / n**2
    stray = float(np.var(credited - confidence)) / n
    return math.sqrt(right + stray + fit_variance)


# --- fitting -------------------------------------------------------------------------------------
def atc_threshold(scores: np.ndarray, correct: np.ndarray) -> float:
    """The t for which the share of `scores` above t is the share of `correct` answers."""
    ordered = np.sort(scores)[::-1]
    right = int(np.sum(correct))
    if right == 0:
        return float(ordered[0])
    if right == len(ordered):
        return float(np.nextafter(ordered[-1], -np.inf))
    return float((ordered[right - 1] + ordered[right]) / 2)


def checked_labels(labels: np.ndarray, n: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= NUM_CLASSES:
        raise InputError(
            f"labels must be {n} class ids in 0..{NUM_CLASSES - 1}, got {y.dtype} {list(y.shape)}"
        )
    return y


def _per_class(p: np.ndarray, correct: np.ndarray) -> dict[str, tuple]:
    """Held-out answers per predicted class: count, precision, DoC offset and spread (None when few)."""
    predicted, confidence = p.argmax(axis=1), p.max(axis=1)
    counts = np.bincount(predicted, minlength=NUM_CLASSES)
    precision, offset, spread = [], [], []
    for k in range(NUM_CLASSES):
        mine = predicted == k
        enough = counts[k] >= MIN_CLASS_EXAMPLES
        gap = confidence[mine] - correct[mine]
        precision.append(float(correct[mine].mean()) if enough else None)
        offset.append(-float(gap.mean()) if enough else None)
        spread.append(float(np.mean(gap**2)) if enough else None)
    return {
        "class_counts": tuple(int(c) for c in counts),
        "class_precision": tuple(precision),
        "class_offset": tuple(offset),
        "class_spread": tuple(spread),
    }


def fit(
    probabilities: np.ndarray,
    labels: np.ndarray,
    shifted: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    score: str = SCORE_NEGATIVE_ENTROPY,
) -> Estimator:
    """Fit on held-out answers and their labels; the interval's margins on `shifted` ones.

    `shifted` maps a name to (probabilities, labels) of a shift of held-out
    images whose labels are known (`fit_from_model` makes them). Without it the
    margins are 0 and the interval covers chance only: right in distribution,
    far too narrow under shift.
    """
    p = checked_probabilities(probabilities)
    y = checked_labels(labels, len(p))
    correct = p.argmax(axis=1) == y
    scores = confidence_scores(p, score)
    threshold = atc_threshold(scores, correct)
    unwidened = Estimator(
        score=score,
        threshold=threshold,
        held_out_examples=len(p),
        held_out_accuracy=float(correct.mean()),
        held_out_spread=float(np.mean((scores > threshold) != correct)),
        class_shares=tuple(float(s) for s in np.bincount(y, minlength=NUM_CLASSES) / len(y)),
        **_per_class(p, correct),
    )
    if not shifted:
        return unwidened
    return dataclasses.replace(unwidened, **shift_margins(unwidened, shifted), fit_shifts=tuple(shifted))


def conformal_quantile(values: Iterable[float], level: float) -> float:
    """The ceil((m + 1) level)-th smallest of m values (the largest when m is small): split conformal."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(math.ceil((len(ordered) + 1) * level), len(ordered)) - 1]


def shift_margins(
    unwidened: Estimator, shifted: Mapping[str, tuple[np.ndarray, np.ndarray]]
) -> dict[str, float]:
    """Margins with which each side of the interval misses at most 5 % of the shifts (classes pooled)."""
    overall, per_class = [], []
    for probabilities, labels in shifted.values():
        p = checked_probabilities(probabilities)
        predicted = p.argmax(axis=1)
        correct = predicted == checked_labels(labels, len(p))
        overall.append(unwidened.overall_reading(p).needed_margins(float(correct.mean())))
        for k, reading in enumerate(unwidened.class_readings(p)):
            if reading is not None:
                per_class.append(reading.needed_margins(float(correct[predicted == k].mean())))
    return {
        "margin_low": conformal_quantile((m[0] for m in overall), SIDE_LEVEL),
        "margin_high": conformal_quantile((m[1] for m in overall), SIDE_LEVEL),
        "class_margin_low": conformal_quantile((m[0] for m in per_class), SIDE_LEVEL),
        "class_margin_high": conformal_quantile((m[1] for m in per_class), SIDE_LEVEL),
    }


def fit_from_model(
    predict: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    labels: np.ndarray,
    shifts: Mapping[str, Callable[[np.ndarray], np.ndarray]] | None = None,
) -> Estimator:
    """Fit on held-out images (uint8 [n, 28, 28]) through `predict` (images -> probabilities [n, 10]).

    Each of `shifts` (default: `core.synthetic_shifts.FIT_SHIFTS`) is applied
    to the held-out images and answered by the model, to measure the
    estimator's own error under shift for its interval: 1 + len(shifts)
    passes over the images.
    """
    from core.synthetic_shifts import FIT_SHIFTS

    shifts = FIT_SHIFTS if shifts is None else shifts
    shifted = {name: (predict(shift(images)), labels) for name, shift in shifts.items()}
    return fit(predict(images), labels, shifted)


# --- files ---------------------------------------------------------------------------------------
def estimator_path(model_dir: str) -> str:
    """Where an exported model version keeps its estimator: `<version>/assets.extra/<file>`."""
    return os.path.join(model_dir, ASSETS_EXTRA_DIR, ACCURACY_ESTIMATE_FILE)


def save_estimator(estimator: Estimator, path: str) -> None:
    """Write the estimator's JSON at `path` (local or gs://), making its directory."""
    storage.make_dirs(os.path.dirname(path))
    storage.write_text(path, estimator.to_json())


def load_estimator(path: str) -> Estimator:
    """The estimator saved at `path`; a missing or unreadable file is an InputError naming it."""
    if not storage.exists(path):
        raise InputError(f"{path}: no accuracy estimator (was the model exported before estimates existed?)")
    try:
        return Estimator.from_json(storage.read_text(path))
    except InputError as err:
        raise InputError(f"{path}: {err}") from err
