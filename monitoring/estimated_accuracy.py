"""The model's accuracy on the drift report's batch, estimated without labels by the version's own estimator.

Every exported version carries the estimator fitted on its held-out images when
it was trained (`<version>/assets.extra/accuracy_estimate.json`, written by
`components/trainer.py`; the method in `core/accuracy_estimate.py`). It reads the
answers the model gave the batch (the logged probabilities of request logs, the
model's own answers for any other input) and says what share of them is likely
right, overall and per predicted class, each with a 90 % interval.

A version exported before estimators existed has no file: the report says so
plainly and estimates nothing. A file that is there but unreadable is bad input
(exit 2, naming it), found before any other work.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from core import storage
from core.accuracy_estimate import Estimate, Estimator, OutdatedEstimatorError, estimator_path, load_estimator
from core.errors import InputError

ESTIMATED_ACCURACY = "estimated_accuracy"  # the key in drift_summary.json
PER = 1000  # wrong answers are counted per this many requests: a number a person can picture


@dataclasses.dataclass(frozen=True)
class VersionEstimator:
    """A version's estimator, or why there is none; `version` None when the model directory is not one."""

    estimator: Estimator | None
    path: str | None
    version: int | None
    why_not: str | None = None


@dataclasses.dataclass(frozen=True)
class AccuracyEstimate:
    """What the report says about accuracy: an estimate and whose answers it read, or why there is none."""

    estimate: Estimate | None
    why_not: str | None = None
    answers: str = ""  # whose answers were read: logged ones, or the model's own
    estimator: VersionEstimator | None = None
    caution: str | None = None  # something that makes this estimate less sure than its interval says

    def wrong_per_thousand(self) -> tuple[int, int, int] | None:
        """Expected wrong answers per 1,000 requests like these; the fewest and most the interval allows."""
        if self.estimate is None:
            return None
        e = self.estimate
        return round((1 - e.value) * PER), round((1 - e.high) * PER), round((1 - e.low) * PER)

    def figure(self) -> str:
        """The estimate and its interval, as percentages ("91.2 % (90 % interval 88.0 % to 93.5 %)")."""
        e = self.estimate
        return f"{percent(e.value)} (90 % interval {percent(e.low)} to {percent(e.high)})" if e else ""

    def meaning(self) -> str:
        """What the estimate means for the people the model answers, in wrong answers per 1,000."""
        if self.estimate is None:
            return ""
        expected, fewest, most = self.wrong_per_thousand()
        return (
            f"expect about {expected:,} wrong answers per {PER:,} requests like these "
            f"(between {fewest:,} and {most:,})"
        )

    def sentence(self) -> str:
        """One line for the terminal: the estimate and what it means, or why there is none."""
        if self.estimate is None:
            return f"accuracy not estimated: {self.why_not}"
        return f"estimated accuracy: {self.figure()}: {self.meaning()}"

    def to_dict(self) -> dict[str, Any]:
        """The `estimated_accuracy` object of drift_summary.json: fractions, or nulls and the reason."""
        if self.estimate is None:
            empty = {"value": None, "low": None, "high": None, "per_class": {}, "method": None}
            return {**empty, "not_estimated": self.why_not, "estimator": self._estimator_facts()}
        expected, fewest, most = self.wrong_per_thousand()
        return {
            **self.estimate.to_dict(),
            "wrong_per_1000": {"expected": expected, "fewest": fewest, "most": most},
            "answers": self.answers,
            "estimator": self._estimator_facts(),
            "caution": self.caution,
        }

    def _estimator_facts(self) -> dict[str, Any] | None:
        found = self.estimator
        if found is None or found.path is None:
            return None
        facts: dict[str, Any] = {"path": found.path, "version": found.version}
        if found.estimator is not None:
            facts.update(
                held_out_accuracy=found.estimator.held_out_accuracy,
                held_out_images=found.estimator.held_out_examples,
            )
        return facts


def version_of(model_dir: str) -> int | None:
    """The version number a model directory is named by (`<base>/<model>/<version>`), if it is one."""
    name = os.path.basename(os.path.normpath(model_dir))
    return int(name) if name.isascii() and name.isdigit() else None


def find_estimator(model_dir: str | None, why_no_model: str) -> VersionEstimator:
    """The estimator the model at `model_dir` was exported with; a missing or outdated one is said, a broken
    one refused.

    `why_no_model` is the reason given when there is no model to ask at all.
    """
    if model_dir is None:
        return VersionEstimator(None, None, None, why_no_model)
    path, version = estimator_path(model_dir), version_of(model_dir)
    which = f"version {version}" if version is not None else model_dir
    if not storage.exists(path):
        return VersionEstimator(
            None,
            path,
            version,
            f"{which} has no accuracy estimator ({path} is missing): it was exported before every "
            "version carried one; a model trained now has it",
        )
    try:
        return VersionEstimator(load_estimator(path), path, version)
    except OutdatedEstimatorError as err:
        why = f"{which}'s accuracy estimator is outdated ({err}); a model trained now has it"
        return VersionEstimator(None, path, version, why)


def estimate_accuracy(
    found: VersionEstimator,
    probabilities: np.ndarray | None,
    answers: str,
    answered_by: tuple[int, ...] = (),
) -> AccuracyEstimate:
    """The batch's estimated accuracy from `probabilities` (the answers it got), or why there is none.

    `answered_by` lists the versions whose logged answers these are, when
    known: answers of another version than the estimator's are read as if
    its own model gave them, which the estimate warns about.
    """
    if found.estimator is None:
        return AccuracyEstimate(None, found.why_not, estimator=found)
    if probabilities is None:
        return AccuracyEstimate(None, "no answers of the model for these images", estimator=found)
    try:
        estimate = found.estimator.estimate(probabilities)
    except InputError as err:
        raise InputError(f"{answers}: {err}") from None
    others = sorted(set(answered_by) - {found.version})
    caution = None
    if found.version is not None and others:
        caution = (
            f"the logged answers include those of version(s) {', '.join(map(str, others))}, read with "
            f"version {found.version}'s estimator; --logged-version {found.version} keeps its own"
        )
    return AccuracyEstimate(estimate, answers=answers, estimator=found, caution=caution)


def percent(fraction: float) -> str:
    """A fraction as a percentage for people, to a tenth of a point ("91.2 %")."""
    return f"{fraction * 100:.1f} %"
