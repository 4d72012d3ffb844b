"""The served model's accuracy on a batch, estimated from its probabilities alone, with a 90 % interval.

Overall, one of two readings, chosen per batch:

- **A change of class mix** (`class_mix_fit`): the batch's answers, counted
  in cells of predicted class x confidence band, are fitted as a mixture of
  each label's held-out answers (black-box shift estimation, Lipton et al.,
  ICML 2018). If the misfit is within what chance gives pure class-mix
  resamples of held-out answers (`class_mix_tolerance`, measured at fit
  time), the inputs read as unchanged and only their proportions moved: each
  answer is credited with the chance its label is the class it names, from
  the fitted label shares, and the estimate is the mean (BBSE's accuracy,
  read answer by answer).
- **Otherwise, the inputs changed**: Confidence Optimal Transport (COT; Lu et
  al., "Characterizing Out-of-Distribution Error via Optimal Transport",
  NeurIPS 2023). The answers are carried onto the held-out label shares at
  the cost 1 - p_k (`transport_credit`), and the estimate is 1 - the mean cost:
  answers that crowd onto a class beyond its share are read as wrong, though
  confident.

Per predicted class: difference of confidences (DoC; Guillory et al.,
"Predicting with Confidence on Unseen Distributions", ICCV 2021), the mean top
probability of the answers naming the class, moved by the gap between the
class's precision and its mean confidence on the held-out answers.

Why (`benchmarks/accuracy_estimate_benchmark.py`, results/accuracy_estimate.json:
29 shifted copies of the official test set, 10 kinds, model 1796247258 fitted
on its 5,934 eval images, 2026-12-03). Mean absolute error over the 29: this
estimate 2.27 points, ATC-NE (Garg et al., ICLR 2022; this module's method
before) 5.54, ATC on the top probability 6.75, DoC overall 9.81, mean
confidence 10.08. COT alone read the two class-mix cases 14 and 40 points too
low (it holds the held-out mix by construction), and ATC-NE erred most where
the answers stay confident but pile onto a few classes (noise of sd 50: ATC-NE
0.621, COT 0.346, truth 0.320); the class-mix check sent exactly the clean set
and the two class-mix cases to the other reading. Per predicted class DoC
erred by 10.35 points, mean confidence 10.24, ATC with per-class thresholds
14.46.

The interval. A class-mix reading's error is sampling: which answers are
right given their credited chances, and each label's held-out recall
(binomial); its interval is that alone. The transport reading's error under
shift is bias, so

    low  = value - z * sd - margin_low  * max(departure, pile_up)
    high = value + z * sd + margin_high * departure

- sd: chance alone (`chance_sd`): which of the batch's answers are right,
  given their confidences; how far the credits stray from the confidences in
  a sample of this size; and the held-out sample the estimate was fitted on;
  z for 90 %;
- departure: |held-out figure - estimate|, how far the estimate moved: the
  further, the larger the shift and the estimate's error;
- pile_up: how far the answers crowd onto fewer classes than the held-out
  labels hold (total variation from the held-out class shares; per class, the
  share of the class's answers beyond its held-out share), less what chance
  gives a batch of this size;
- margin_low, margin_high: the estimator's own error per unit of those,
  measured at fit time on synthetic shifts of the held-out images
  (`core/synthetic_shifts.py`, other kinds than the benchmark's), at the
  split-conformal 95 % level per side (90 % two-sided).

How it holds (same benchmark): the interval held the truth in 27 of the 29
shifted cases (93 %; an interval of chance alone: 31 %), mean width 11.1
points, and on the clean test set (width 1.2 points); per class in 84 % of 274
figures. On simulated calibrated answers without shift it covers 90 % within
chance over 200 draws, its sd the error's (tests/core/test_accuracy_estimate.py).
Where it fails: rotation leaves many answers right but unsure (8 and 15
degrees: truth 0.906 and 0.820, estimates 0.886 and 0.776), the interval just
too low; strong shifts that keep answers
confident are read too high (rotated 30 degrees: 0.465 for 0.346; translated
5 pixels: 0.518 for 0.420), inside their wide intervals. A batch that is a
class mix change and a shift of the inputs at once is read as the latter, and
a batch of only the easiest answers of one class as a pile-up: from
probabilities alone neither can be told apart (`Estimate.ceiling` gives the
highest accuracy the held-out class mix allows).

numpy only at import (scipy when a batch is read; no TensorFlow): every
layer may use it, the server included. Reading a batch of 10,000 answers
took 0.4 to 2.5 s under the transport reading, 10 to 40 ms under the
class-mix one (the benchmark's cases, on a host busy with another job).
Saving and loading go through `core/storage.py`.
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

SCORE_NEGATIVE_ENTROPY, SCORE_MAX_CONFIDENCE = "negative_entropy", "max_confidence"  # ATC's, for comparison
METHOD_TRANSPORT = "COT (per class: DoC)"
METHOD_CLASS_MIX = "class mix changed: BBSE (per class: DoC)"
METHODS = (METHOD_TRANSPORT, METHOD_CLASS_MIX)  # an estimate names the reading it took
METHOD = "COT, or BBSE on a change of class mix (per class: DoC)"  # the estimator's
INTERVAL_LEVEL = 0.90
SIDE_LEVEL = 0.95  # each side misses at most 5 %: 90 % two-sided
Z_90 = 1.6448536269514722  # scipy.stats.norm.ppf(0.95)
MIN_CLASS_EXAMPLES = 30  # fewer answers of a predicted class: no per-class figure
FORMAT_VERSION = 2  # 2: COT and the class-mix reading (1: ATC-NE)
PROBABILITY_TOLERANCE = 1e-3  # rows of float32 softmax sum to 1 within far less
# The class-mix check's cells: each answer's predicted class and its confidence band.
CONFIDENCE_EDGES = (0.5, 0.8, 0.95, 0.99)
CELLS = NUM_CLASSES * (len(CONFIDENCE_EDGES) + 1)
# Entropic transport, solved at each of these smoothings in turn (each warm-starts the next): the last one
# puts the cost within 0.001 x log(10), a quarter of a point, of the exact plan's.
TRANSPORT_SMOOTHING = (1e-1, 1e-2, 1e-3)
CLASS_MIX_DRAWS, CLASS_MIX_SEED = 60, 0  # class-mix resamples of held-out answers that fit the check


class OutdatedEstimatorError(InputError):
    """An estimator written in another format (a model exported before this method): not an error of
    the batch or the request, so readers say there is no estimate and go on."""


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

    `method`: the reading taken, one of `METHODS`: transport (the inputs
    changed) or a change of class mix (the answers look like held-out ones
    in other proportions). `ceiling`: the highest accuracy the batch can have
    if its true class mix is the held-out one (sum over classes of the smaller
    of the answer share and the held-out share).
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
    """One figure before its margins: the estimate and what its interval is built from.

    A class-mix reading (`class_mix`) has no departure to widen by: its error
    is the sampling of the batch and of the held-out answers, all in `sd`.
    """

    value: float
    sd: float  # chance alone
    departure: float  # |held-out figure - value|
    pile_up: float  # answers beyond the held-out class shares
    class_mix: bool = False

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

    held_out_examples: int
    held_out_accuracy: float
    held_out_spread: float  # mean of (transport credit - right)^2 over held-out answers
    class_shares: tuple[float, ...]  # held-out labels per class
    class_counts: tuple[int, ...]  # held-out answers per predicted class
    # Per predicted class (None below MIN_CLASS_EXAMPLES held-out answers): precision, precision minus
    # mean confidence (DoC's offset), and the mean of (confidence - right)^2.
    class_precision: tuple[float | None, ...]
    class_offset: tuple[float | None, ...]
    class_spread: tuple[float | None, ...]
    # Per true class: the shares of its held-out answers per predicted class, and per cell
    # (`answer_cells`). With them a change of class mix is recognised and read.
    confusion: tuple[tuple[float, ...], ...]
    cells: tuple[tuple[float, ...], ...]
    class_mix_tolerance: float  # a batch reads as a class-mix change below this many chance residuals
    margin_low: float = 0.0
    margin_high: float = 0.0
    class_margin_low: float = 0.0
    class_margin_high: float = 0.0
    fit_shifts: tuple[str, ...] = ()
    class_names: tuple[str, ...] = CLASS_NAMES
    min_class_examples: int = MIN_CLASS_EXAMPLES

    def __post_init__(self):
        per_class = (
            self.class_shares,
            self.class_counts,
            self.class_precision,
            self.class_offset,
            self.class_spread,
            self.confusion,
            self.cells,
        )
        if len(self.class_names) != NUM_CLASSES or any(len(v) != NUM_CLASSES for v in per_class):
            raise InputError(f"an accuracy estimator needs {NUM_CLASSES} figures per class")
        if any(len(row) != NUM_CLASSES for row in self.confusion) or any(len(r) != CELLS for r in self.cells):
            raise InputError(
                f"an accuracy estimator needs {NUM_CLASSES} x {NUM_CLASSES} confusion shares and "
                f"{NUM_CLASSES} x {CELLS} cell shares"
            )

    @property
    def method(self) -> str:
        return METHOD

    def estimate(self, probabilities: np.ndarray) -> Estimate:
        """The batch's estimated accuracy overall and per predicted class, each with its 90 % interval."""
        p = checked_probabilities(probabilities)
        mix = self.class_mix(p)
        overall = self.overall_reading(p, mix)
        low, high = overall.interval(self.margin_low, self.margin_high)
        counts = np.bincount(p.argmax(axis=1), minlength=NUM_CLASSES)
        readings = self.class_readings(p)
        per_class = {
            name: self._class_estimate(reading, int(count))
            for name, reading, count in zip(self.class_names, readings, counts, strict=True)
        }
        ceiling = float(np.minimum(counts / len(p), self.class_shares).sum())
        method = METHOD_CLASS_MIX if overall.class_mix else METHOD_TRANSPORT
        return Estimate(overall.value, low, high, per_class, method, len(p), ceiling)

    def _class_estimate(self, reading: Reading | None, count: int) -> ClassEstimate:
        if reading is None:
            return ClassEstimate(None, None, None, count)
        return ClassEstimate(
            reading.value, *reading.interval(self.class_margin_low, self.class_margin_high), count
        )

    def class_mix(self, p: np.ndarray) -> np.ndarray | None:
        """The batch's label shares if its answers read as held-out ones in other proportions, else None."""
        weights, ratio = class_mix_fit(np.asarray(self.cells), self.held_out_examples, p)
        return weights if ratio <= self.class_mix_tolerance else None

    def overall_reading(self, p: np.ndarray, mix: np.ndarray | None | bool = True) -> Reading:
        """The estimate before margins: the class-mix reading when `mix` holds label shares, else COT.

        `mix=True` (the default) runs the class-mix check first; `None` skips it.
        """
        mix = self.class_mix(p) if mix is True else mix
        if mix is not None:
            return self._class_mix_reading(p, mix)
        credit = transport_credit(p, np.asarray(self.class_shares))
        value = float(credit.mean())
        shares = np.bincount(p.argmax(axis=1), minlength=NUM_CLASSES) / len(p)
        return Reading(
            value=value,
            sd=chance_sd(p.max(axis=1), credit, self.held_out_spread / self.held_out_examples),
            departure=abs(self.held_out_accuracy - value),
            pile_up=max(
                0.0, float(np.sum(np.maximum(shares - self.class_shares, 0) - self._chance_excess(len(p))))
            ),
        )

    def _class_mix_reading(self, p: np.ndarray, mix: np.ndarray) -> Reading:
        """Accuracy under the batch's label shares, read answer by answer.

        An answer in cell c (naming class j) is right with the chance that its
        label is j: w_j P(c | j) / sum_k w_k P(c | k), from the held-out cell
        shares of each label P(c | k) and the batch's label shares w. The mean
        over the batch's answers is the estimate (with the fitted mixture in
        place of the batch's cells it is sum_k w_k recall_k, BBSE's). Its
        chance: which answers are right given those chances, and each label's
        held-out recall (binomial).
        """
        given = np.asarray(self.cells).T  # [cell, label]
        cells = answer_cells(p)
        named = cells // (len(CONFIDENCE_EDGES) + 1)
        either = given[cells] @ mix
        right = np.where(either > 0, mix[named] * given[cells, named] / np.maximum(either, 1e-12), 0.0)
        recall = np.diag(np.asarray(self.confusion))
        labels = np.maximum(np.asarray(self.class_shares) * self.held_out_examples, 1)
        variance = float(np.sum(right * (1 - right))) / len(p) ** 2
        variance += float(np.sum(mix**2 * recall * (1 - recall) / labels))
        return Reading(
            value=float(right.mean()), sd=math.sqrt(variance), departure=0.0, pile_up=0.0, class_mix=True
        )

    def class_readings(self, p: np.ndarray) -> list[Reading | None]:
        """Per predicted class, DoC before margins; None with too few answers here or held out.

        DoC under either reading: it held its 90 % in distribution, and a
        precision read from the class-mix weights carries their noise.
        """
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
            raise OutdatedEstimatorError(
                f"accuracy estimator format {version}; this code reads {FORMAT_VERSION}"
            )
        tuples = {f.name for f in dataclasses.fields(cls) if str(f.type).startswith("tuple")}
        nested = {"confusion", "cells"}
        try:
            return cls(**{
                k: (tuple(tuple(row) for row in v) if k in nested else tuple(v)) if k in tuples else v
                for k, v in fields.items()
            })  # fmt: skip
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
    raise InputError(
        f"unknown confidence score {score!r}; one of {[SCORE_NEGATIVE_ENTROPY, SCORE_MAX_CONFIDENCE]}"
    )


def answer_cells(p: np.ndarray) -> np.ndarray:
    """Per answer, its cell for the class-mix check: predicted class x confidence band."""
    bands = np.searchsorted(np.asarray(CONFIDENCE_EDGES), p.max(axis=1))
    return p.argmax(axis=1) * (len(CONFIDENCE_EDGES) + 1) + bands


def transport_credit(p: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """Per answer, 1 - its cost in the cheapest plan that moves the answers onto the held-out class shares.

    Confidence Optimal Transport (COT; Lu et al., "Characterizing Out-of-
    Distribution Error via Optimal Transport", NeurIPS 2023): with the class
    mix held, answers that crowd onto a class beyond its share must be carried
    to others at the cost 1 - p_k, so a model that is confidently wrong in one
    direction, which mean confidence and ATC cannot see, is read as wrong. The
    mean credit is the estimate. Solved as entropic transport on the ten dual
    prices (semi-dual, L-BFGS; Genevay et al., NeurIPS 2016): a second for
    10,000 answers, where an exact linear program took 2 to 37 s.
    """
    from scipy.optimize import minimize
    from scipy.special import logsumexp, softmax

    cost = 1 - p
    prices = np.zeros(NUM_CLASSES)
    for smoothing in TRANSPORT_SMOOTHING:

        def negative_dual(v: np.ndarray, smoothing: float = smoothing) -> tuple[float, np.ndarray]:
            z = (v[None, :] - cost) / smoothing
            value = -smoothing * float(logsumexp(z, axis=1).mean()) + float(shares @ v)
            return -value, softmax(z, axis=1).mean(axis=0) - shares

        prices = minimize(negative_dual, prices, jac=True, method="L-BFGS-B", options={"maxiter": 500}).x
    plan = softmax((prices[None, :] - cost) / TRANSPORT_SMOOTHING[-1], axis=1)  # rows sum to 1
    return 1 - np.sum(plan * cost, axis=1)


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
    shares = np.bincount(y, minlength=NUM_CLASSES) / len(y)
    credit = transport_credit(p, shares)
    unwidened = Estimator(
        held_out_examples=len(p),
        held_out_accuracy=float(correct.mean()),
        held_out_spread=float(np.mean((credit - correct) ** 2)),
        class_shares=tuple(float(s) for s in shares),
        **_per_class(p, correct),
        confusion=_shares_per_label(p.argmax(axis=1), y, NUM_CLASSES),
        cells=_shares_per_label(answer_cells(p), y, CELLS),
        class_mix_tolerance=class_mix_tolerance(p, y),
    )
    if not shifted:
        return unwidened
    return dataclasses.replace(unwidened, **shift_margins(unwidened, shifted), fit_shifts=tuple(shifted))


def _shares_per_label(values: np.ndarray, y: np.ndarray, size: int) -> tuple[tuple[float, ...], ...]:
    """Per label, the shares of its answers' `values` (0..size-1); zeros for a label never held out."""
    rows = []
    for k in range(NUM_CLASSES):
        mine = values[y == k]
        counts = np.bincount(mine, minlength=size)
        rows.append(tuple(float(c) for c in counts / max(len(mine), 1)))
    return tuple(rows)


def class_mix_fit(cells: np.ndarray, held_out: int, p: np.ndarray) -> tuple[np.ndarray, float]:
    """The label shares that best explain the batch's answers, and the misfit in chance residuals.

    Black-box shift estimation (Lipton et al., ICML 2018) on cells: the
    batch's shares of (predicted class, confidence band) are fitted as a
    mixture of each held-out label's own (`cells`, [label, cell]; non-negative
    least squares). A change of class mix alone leaves each label's answers as
    they were, so the misfit is what chance gives two samples (`held_out` and
    the batch's answers); changed inputs move answers to other bands and
    classes, which no mixture reproduces.
    """
    from scipy.optimize import nnls

    given = cells.T  # [cell, label]
    shares = np.bincount(answer_cells(p), minlength=CELLS) / len(p)
    weights, _ = nnls(given, shares)
    if weights.sum() <= 0:
        return np.full(NUM_CLASSES, 1 / NUM_CLASSES), math.inf
    weights = weights / weights.sum()
    fitted = given @ weights
    sd = np.sqrt(fitted * (1 - fitted) * (1 / len(p) + 1 / held_out))
    chance = 0.5 * math.sqrt(2 / math.pi) * float(sd.sum())
    return weights, 0.5 * float(np.abs(shares - fitted).sum()) / max(chance, 1e-12)


def class_mix_tolerance(p: np.ndarray, y: np.ndarray) -> float:
    """How many chance residuals a pure change of class mix reaches, measured on held-out answers.

    The held-out answers are split in two: the cells of one half, and class-mix
    resamples of the other (random label shares, batches of 100 answers up to
    the half). The largest residual over chance is the tolerance, so that every
    such resample would have been read as a change of class mix.
    """
    rng = np.random.default_rng(CLASS_MIX_SEED)
    half = rng.permutation(len(p)) % 2 == 0
    cells = np.asarray(_shares_per_label(answer_cells(p[half]), y[half], CELLS))
    others = [np.flatnonzero(~half & (y == k)) for k in range(NUM_CLASSES)]
    sizes = np.geomspace(100, max(100, int((~half).sum())), CLASS_MIX_DRAWS).astype(int)
    ratios = []
    for size in sizes:
        shares = rng.dirichlet(np.full(NUM_CLASSES, 0.5))
        counts = rng.multinomial(size, shares) * np.array([len(o) > 0 for o in others])
        picked = np.concatenate([rng.choice(o, c) for o, c in zip(others, counts, strict=True) if c])
        if len(picked):
            ratios.append(class_mix_fit(cells, int(half.sum()), p[picked])[1])
    return float(max(ratios, default=1.0))


def conformal_quantile(values: Iterable[float], level: float) -> float:
    """The ceil((m + 1) level)-th smallest of m values (the largest when m is small): split conformal."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(math.ceil((len(ordered) + 1) * level), len(ordered)) - 1]


def shift_margins(
    unwidened: Estimator, shifted: Mapping[str, tuple[np.ndarray, np.ndarray]]
) -> dict[str, float]:
    """Margins with which each side of the interval misses at most 5 % of the shifts (classes pooled).

    Measured on the transport reading of every shift (the class-mix check
    skipped): margins widen only that reading, and a shift of the inputs is
    what it must hold under.
    """
    overall, per_class = [], []
    for probabilities, labels in shifted.values():
        p = checked_probabilities(probabilities)
        predicted = p.argmax(axis=1)
        correct = predicted == checked_labels(labels, len(p))
        overall.append(unwidened.overall_reading(p, mix=None).needed_margins(float(correct.mean())))
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
    """The estimator saved at `path`; a missing or unreadable file is an InputError naming it.

    Another format raises OutdatedEstimatorError (an InputError), also naming the file.
    """
    if not storage.exists(path):
        raise InputError(f"{path}: no accuracy estimator (was the model exported before estimates existed?)")
    try:
        return Estimator.from_json(storage.read_text(path))
    except InputError as err:
        raise type(err)(f"{path}: {err}") from err
