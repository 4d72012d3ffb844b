"""The canary verdict's evidence: the traffic the canary and stable answered over the same period.

From the request logs (`fmnist serve --request-log-dir`, `fmnist log-proxy`),
each logged request is given to the version that answered it
(`model_spec.version`). The period starts at the canary's first logged
request: stable's requests from before it existed are left out. Then:

- input drift between the two samples: the canary's images against stable's
  as the reference (`monitoring/drift.py`, image features only: the models'
  answers differ by design, their inputs should not);
- each version's accuracy on its own traffic, estimated without labels by the
  estimator it was exported with (`monitoring/estimated_accuracy.py`), and the
  difference with an interval;
- agreement: a sample of the logged images of both, replayed through both
  versions' SavedModels from the serving directory;
- from the server's metrics page when given: requests, failures and p99
  latency of each version (`monitoring/version_metrics.py`).

The decision itself is `core/canary_rule.py`'s.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable

import numpy as np

from core.canary_rule import CanaryEvidence, Difference, percent
from core.config import CanaryConfig, DriftConfig
from core.errors import InputError
from core.versions import has_saved_model
from core.vocabulary import IMAGE_HEIGHT, IMAGE_WIDTH
from monitoring.batches import Batch
from monitoring.drift import MEANINGS, build_reference, check_drift, model_predictor
from monitoring.estimated_accuracy import AccuracyEstimate, estimate_accuracy, find_estimator
from monitoring.version_metrics import version_calls
from serving.request_log import LoggedRequest, read_request_logs

REPLAY_SEED = 0


@dataclasses.dataclass(frozen=True)
class Traffic:
    """One version's logged requests in the period: images, and its answers (logged, else replayed)."""

    version: int
    requests: int
    images: np.ndarray
    probabilities: np.ndarray | None


@dataclasses.dataclass(frozen=True)
class Findings:
    """The evidence for the rule, and what a person reads beside it."""

    evidence: CanaryEvidence
    estimates: dict[str, AccuracyEstimate]  # by role: canary, stable
    notes: tuple[str, ...]  # what was not measured, and why; records left out


def version_dir(serving_dir: str, model: str, version: int) -> str:
    """A served version's SavedModel directory; InputError when it is not on disk."""
    path = os.path.join(serving_dir, model, str(version))
    if not has_saved_model(path):
        raise InputError(f"{model}: version {version} is not on disk (no saved_model.pb under {path})")
    return path


def _traffic(requests: list[LoggedRequest], version: int) -> Traffic:
    mine = [r for r in requests if r.version == version]
    if not mine:
        return Traffic(version, 0, np.zeros((0, IMAGE_HEIGHT, IMAGE_WIDTH), np.uint8), None)
    answers = [r.probabilities for r in mine]
    logged = None if any(a is None for a in answers) else np.concatenate(answers)
    return Traffic(version, len(mine), np.concatenate([r.images for r in mine]), logged)


def split_traffic(files: list[str], model: str, canary: int, stable: int) -> tuple[Traffic, Traffic, str]:
    """Canary's and stable's logged requests from the canary's first one on; and what was left out."""
    reading = read_request_logs(files, model)
    requests = reading.requests
    canary_times = [r.logged_at for r in requests if r.version == canary]
    start = min(canary_times) if canary_times else 0
    earlier = [r for r in requests if r.version == stable and r.logged_at < start]
    kept = [r for r in requests if r.logged_at >= start]
    left_out = [reading.skipped_text()] if reading.skipped else []
    if earlier:
        left_out.append(f"{len(earlier)} stable requests from before the canary's first")
    return _traffic(kept, canary), _traffic(kept, stable), ", ".join(left_out)


def _with_answers(traffic: Traffic, predict: Callable[[np.ndarray], np.ndarray]) -> Traffic:
    if traffic.probabilities is not None or not traffic.requests:
        return traffic
    return dataclasses.replace(traffic, probabilities=predict(traffic.images))


def drifted_features(canary: Traffic, stable: Traffic, drift: DriftConfig) -> tuple[str, ...] | None:
    """Image features whose distribution differs between the two samples; None when too few to judge."""
    if min(len(canary.images), len(stable.images)) < drift.min_images:
        return None
    description = f"stable's logged requests ({len(stable.images)} images)"
    reference = build_reference(stable.images, None, None, drift, description)
    result = check_drift(Batch(canary.images, "the canary's logged requests"), reference, drift, None)
    return tuple(f"{MEANINGS[f.feature].words} ({f.feature})" for f in result.drifted_features)


def agreement(
    canary: Traffic, stable: Traffic, predictors: dict[int, Callable], sample: int
) -> tuple[float | None, int]:
    """Share of a sample of both versions' logged images that both answer with the same class."""
    images = np.concatenate([canary.images, stable.images])
    if not len(images):
        return None, 0
    chosen = np.random.default_rng(REPLAY_SEED).permutation(len(images))[:sample]
    replayed = images[np.sort(chosen)]
    answers = [predictors[t.version](replayed).argmax(axis=1) for t in (canary, stable)]
    return float(np.mean(answers[0] == answers[1])), len(replayed)


def difference(canary: AccuracyEstimate, stable: AccuracyEstimate) -> Difference | None:
    """canary - stable, each side's half-widths added in quadrature (independent samples); None if either
    has no estimate."""
    c, s = canary.estimate, stable.estimate
    if c is None or s is None:
        return None
    value = c.value - s.value
    below = math.hypot(c.value - c.low, s.high - s.value)
    above = math.hypot(c.high - c.value, s.value - s.low)
    return Difference(value, value - below, value + above)


def _estimate(model_dir: str, traffic: Traffic) -> AccuracyEstimate:
    found = find_estimator(model_dir, "")
    if not traffic.requests:
        return AccuracyEstimate(None, f"version {traffic.version} logged no requests", estimator=found)
    answers = f"version {traffic.version}'s answers to its logged requests"
    return estimate_accuracy(found, traffic.probabilities, answers, (traffic.version,))


def gather(
    files: list[str],
    serving_dir: str,
    model: str,
    versions: tuple[int, int],
    config: CanaryConfig,
    drift: DriftConfig,
    metrics_page: str | None,
) -> Findings:
    """What the rule reads about `versions` (canary, stable) of `model`: from logs, models and metrics."""
    canary_version, stable_version = versions
    dirs = {v: version_dir(serving_dir, model, v) for v in versions}
    predictors = {v: model_predictor(path) for v, path in dirs.items()}
    canary, stable, left_out = split_traffic(files, model, canary_version, stable_version)
    canary, stable = (_with_answers(t, predictors[t.version]) for t in (canary, stable))
    estimates = {
        "canary": _estimate(dirs[canary_version], canary),
        "stable": _estimate(dirs[stable_version], stable),
    }
    agreed, replayed = agreement(canary, stable, predictors, config.canary_replay_images)
    notes = [f"request-log records left out: {left_out}"] if left_out else []
    notes += [f"{role}: {e.why_not}" for role, e in estimates.items() if e.estimate is None]
    calls = {}
    if metrics_page is None:
        notes.append("errors and latency not measured: no --metrics-url")
    else:
        calls = {v: version_calls(metrics_page, model, v) for v in versions}
    drifted = drifted_features(canary, stable, drift)
    if drifted is None:
        notes.append(f"input drift not judged: fewer than {drift.min_images} images on one side")
    evidence = CanaryEvidence(
        canary_version=canary_version,
        stable_version=stable_version,
        canary_requests=canary.requests,
        stable_requests=stable.requests,
        drifted_features=drifted,
        accuracy_difference=difference(estimates["canary"], estimates["stable"]),
        agreement=agreed,
        agreement_images=replayed,
        canary_calls=calls[canary_version].calls if calls else None,
        canary_error_rate=calls[canary_version].error_rate if calls else None,
        stable_error_rate=calls[stable_version].error_rate if calls else None,
        canary_p99_ms=calls[canary_version].p99_ms if calls else None,
        stable_p99_ms=calls[stable_version].p99_ms if calls else None,
    )
    return Findings(evidence, estimates, tuple(notes))


def evidence_lines(findings: Findings) -> list[str]:
    """The evidence for a person, one fact a line."""
    e, d = findings.evidence, findings.evidence.accuracy_difference

    def rate(value: float | None) -> str:
        return "not measured" if value is None else percent(value)

    def ms(value: float | None) -> str:
        return "not measured" if value is None else f"{value:.1f} ms"

    drift = (
        "not judged" if e.drifted_features is None
        else "; ".join(e.drifted_features) if e.drifted_features else "none"
    )  # fmt: skip
    difference_text = (
        "not estimated" if d is None
        else f"{percent(d.value, True)} (90 % interval {percent(d.low, True)} to {percent(d.high, True)})"
    )  # fmt: skip
    agreement_text = (
        "not measured" if e.agreement is None else f"{percent(e.agreement)} of {e.agreement_images} images"
    )
    lines = [
        f"canary version {e.canary_version}, stable version {e.stable_version}",
        f"logged requests: canary {e.canary_requests}, stable {e.stable_requests}",
        f"input drift between them: {drift}",
        *(f"{role}: {estimate.sentence()}" for role, estimate in findings.estimates.items()),
        f"estimated accuracy, canary - stable: {difference_text}",
        f"agreement on the same inputs: {agreement_text}",
        f"failed requests: canary {rate(e.canary_error_rate)}, stable {rate(e.stable_error_rate)}",
        f"p99 latency: canary {ms(e.canary_p99_ms)}, stable {ms(e.stable_p99_ms)}",
    ]
    return lines + [f"note: {note}" for note in findings.notes]
