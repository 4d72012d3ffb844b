"""The canary verdict: promote, hold or roll back, as a pure function of the evidence and the thresholds.

The evidence is gathered elsewhere (`monitoring/canary.py`: request logs,
replay through both SavedModels, the server's metrics page); this rule only
reads it, so the tables in `tests/core/test_canary_rule.py` pin it down. The
first case that applies decides:

1. the canary fails more of its requests than stable by more than the
   allowance, counted once it has been called `canary_min_requests` times:
   roll back. Before the traffic check, because a canary that fails every
   request logs no answer and would otherwise be held for ever;
2. either version logged fewer than `canary_min_requests` requests: hold,
   saying how many more requests (of all traffic, at the observed split)
   bring both to the minimum;
3. the canary's p99 latency exceeds stable's by more than the allowance, or
   it gives stable's answer on fewer than `canary_min_agreement` of the same
   inputs: roll back;
4. the inputs the two versions answered drifted apart (a sticky client with
   data of its own on one side): hold; their estimated accuracies are not
   comparable until more clients mix the two samples;
5. the estimated accuracy difference (canary - stable) lies wholly below
   `-canary_max_accuracy_drop`: roll back (95 % confident that it is worse by
   more than the allowance, as the Evaluator's change gates decide);
6. otherwise: promote.

Evidence that could not be measured (no metrics page given, a version
without an accuracy estimator) does not vote, and the verdict says so.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from core.config import CanaryConfig
from core.errors import EXIT_HOLD, EXIT_OK, EXIT_ROLL_BACK

PROMOTE, HOLD, ROLL_BACK = "PROMOTE", "HOLD", "ROLL BACK"
EXIT_CODES = {PROMOTE: EXIT_OK, HOLD: EXIT_HOLD, ROLL_BACK: EXIT_ROLL_BACK}


@dataclasses.dataclass(frozen=True)
class Difference:
    """canary - stable, with its 90 % interval (fractions)."""

    value: float
    low: float
    high: float


@dataclasses.dataclass(frozen=True)
class CanaryEvidence:
    """What was measured of both versions over the same period; None: not measured (it does not vote)."""

    canary_version: int
    stable_version: int
    canary_requests: int  # logged requests each version answered
    stable_requests: int
    drifted_features: tuple[str, ...] | None = None  # input features that moved between the two
    accuracy_difference: Difference | None = None
    agreement: float | None = None  # share of replayed inputs both versions answered alike
    agreement_images: int = 0
    canary_calls: int | None = None  # every request the canary was asked (the metrics page), failed too
    canary_error_rate: float | None = None
    stable_error_rate: float | None = None
    canary_p99_ms: float | None = None
    stable_p99_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The decision, the reasons for it (one line each), and for a hold how many more requests are needed."""

    decision: str
    reasons: tuple[str, ...]
    more_requests: int = 0

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.decision]


def percent(fraction: float, signed: bool = False) -> str:
    """A fraction as a percentage for people, to a tenth of a point ("91.2 %", "-3.0 %" when `signed`)."""
    return f"{fraction * 100:{'+' if signed else ''}.1f} %"


def more_requests_needed(canary: int, stable: int, minimum: int) -> int:
    """Requests of all traffic that bring both versions' logged counts to `minimum`, at the observed split.

    With no request yet on one side the split is unknown: the shortfalls
    added up (a lower bound).
    """
    short_canary, short_stable = max(0, minimum - canary), max(0, minimum - stable)
    if canary == 0 or stable == 0:
        return short_canary + short_stable
    share = canary / (canary + stable)
    return max(math.ceil(short_canary / share), math.ceil(short_stable / (1 - share)))


def _error_reason(evidence: CanaryEvidence, config: CanaryConfig) -> str | None:
    e = evidence
    if None in (e.canary_calls, e.canary_error_rate, e.stable_error_rate):
        return None
    increase = e.canary_error_rate - e.stable_error_rate
    if e.canary_calls >= config.canary_min_requests and increase > config.canary_max_error_increase:
        return (
            f"the canary failed {percent(e.canary_error_rate)} of its {e.canary_calls} requests, stable "
            f"{percent(e.stable_error_rate)}: {percent(increase)} more, above the allowed "
            f"{percent(config.canary_max_error_increase)}"
        )
    return None


def _latency_reason(evidence: CanaryEvidence, config: CanaryConfig) -> str | None:
    e = evidence
    if e.canary_p99_ms is None or e.stable_p99_ms is None:
        return None
    if e.canary_p99_ms - e.stable_p99_ms > config.canary_max_p99_increase_ms:
        return (
            f"the canary's p99 latency is {e.canary_p99_ms:.1f} ms, stable's {e.stable_p99_ms:.1f} ms: more "
            f"than {config.canary_max_p99_increase_ms:g} ms slower"
        )
    return None


def _agreement_reason(evidence: CanaryEvidence, config: CanaryConfig) -> str | None:
    e = evidence
    if e.agreement is not None and e.agreement < config.canary_min_agreement:
        return (
            f"the canary gave stable's answer on {percent(e.agreement)} of {e.agreement_images} logged "
            f"inputs replayed through both, below {percent(config.canary_min_agreement)}"
        )
    return None


def _accuracy_reason(evidence: CanaryEvidence, config: CanaryConfig) -> str | None:
    d = evidence.accuracy_difference
    if d is not None and d.high < -config.canary_max_accuracy_drop:
        return (
            f"the canary's estimated accuracy is {percent(d.value, True)} against stable's (90 % interval "
            f"{percent(d.low, True)} to {percent(d.high, True)}), wholly below "
            f"{percent(-config.canary_max_accuracy_drop, True)}"
        )
    return None


def decide(evidence: CanaryEvidence, config: CanaryConfig) -> Verdict:
    """Promote, hold or roll back (the module docstring gives the order of the cases)."""
    e, minimum = evidence, config.canary_min_requests
    errors = _error_reason(e, config)
    if errors:
        return Verdict(ROLL_BACK, (errors,))
    if e.canary_requests < minimum or e.stable_requests < minimum:
        more = more_requests_needed(e.canary_requests, e.stable_requests, minimum)
        return Verdict(
            HOLD,
            (
                f"not enough traffic: the canary logged {e.canary_requests} requests and stable "
                f"{e.stable_requests}, each needs {minimum}: about {more} more requests",
            ),
            more,
        )
    against = [r for r in (_latency_reason(e, config), _agreement_reason(e, config)) if r]
    if against:
        return Verdict(ROLL_BACK, tuple(against))
    if e.drifted_features:
        return Verdict(
            HOLD,
            (
                f"the inputs the two versions answered differ ({', '.join(e.drifted_features)}): their "
                "accuracies are not comparable yet; more traffic mixes the clients of both",
            ),
        )
    accuracy = _accuracy_reason(e, config)
    if accuracy:
        return Verdict(ROLL_BACK, (accuracy,))
    return Verdict(PROMOTE, ("no check found the canary worse than stable",))
