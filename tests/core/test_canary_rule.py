"""The canary verdict as a table: evidence in, decision and its first reason out."""

import dataclasses

import pytest

from core.canary_rule import (
    HOLD,
    PROMOTE,
    ROLL_BACK,
    CanaryEvidence,
    Difference,
    decide,
    more_requests_needed,
)
from core.config import CanaryConfig
from core.errors import EXIT_HOLD, EXIT_OK, EXIT_ROLL_BACK

CONFIG = CanaryConfig(canary_min_requests=100)
HEALTHY = CanaryEvidence(
    canary_version=2,
    stable_version=1,
    canary_requests=150,
    stable_requests=900,
    drifted_features=(),
    accuracy_difference=Difference(-0.01, -0.05, 0.03),
    agreement=0.93,
    agreement_images=500,
    canary_calls=150,
    canary_error_rate=0.0,
    stable_error_rate=0.0,
    canary_p99_ms=4.0,
    stable_p99_ms=3.0,
)


@pytest.mark.parametrize(
    ("changes", "decision", "words"),
    [
        ({}, PROMOTE, "no check found"),
        # nothing measured beyond the traffic: nothing votes against
        ({"drifted_features": None, "accuracy_difference": None, "agreement": None, "canary_calls": None,
          "canary_error_rate": None, "stable_error_rate": None, "canary_p99_ms": None}, PROMOTE, "no check"),
        ({"canary_requests": 40}, HOLD, "not enough traffic"),
        ({"stable_requests": 99}, HOLD, "stable 99"),
        ({"canary_error_rate": 0.05}, ROLL_BACK, "failed 5.0 %"),
        ({"canary_error_rate": 0.009}, PROMOTE, "no check"),  # within the 1 % allowance
        # failing every request: nothing logged, rolled back all the same once called often enough
        ({"canary_requests": 0, "canary_calls": 120, "canary_error_rate": 1.0}, ROLL_BACK, "failed 100.0 %"),
        ({"canary_requests": 0, "canary_calls": 50, "canary_error_rate": 1.0}, HOLD, "not enough"),
        ({"canary_p99_ms": 60.0}, ROLL_BACK, "p99 latency is 60.0 ms"),
        ({"agreement": 0.5}, ROLL_BACK, "stable's answer on 50.0 %"),
        ({"drifted_features": ("mean intensity",)}, HOLD, "mean intensity"),
        ({"accuracy_difference": Difference(-0.3, -0.4, -0.21)}, ROLL_BACK, "wholly below -2.0 %"),
        # worse by a point estimate, but not surely beyond the allowance
        ({"accuracy_difference": Difference(-0.04, -0.08, -0.01)}, PROMOTE, "no check"),
        # drift holds before the accuracy comparison, which it makes unreliable
        ({"drifted_features": ("ink",), "accuracy_difference": Difference(-0.3, -0.4, -0.2)}, HOLD, "ink"),
        # agreement and latency roll back even with drift: replayed on the same inputs
        ({"drifted_features": ("ink",), "agreement": 0.1}, ROLL_BACK, "answer on 10.0 %"),
    ],
)  # fmt: skip
def test_decision(changes, decision, words):
    verdict = decide(dataclasses.replace(HEALTHY, **changes), CONFIG)
    assert verdict.decision == decision
    assert words in verdict.reasons[0]


def test_exit_codes_tell_the_decisions_apart():
    codes = {
        decide(dataclasses.replace(HEALTHY, **changes), CONFIG).exit_code
        for changes in ({}, {"canary_requests": 1}, {"agreement": 0.0})
    }
    assert codes == {EXIT_OK, EXIT_HOLD, EXIT_ROLL_BACK}


@pytest.mark.parametrize(
    ("canary", "stable", "minimum", "more"),
    [
        (10, 90, 100, 900),  # the canary answers 10 %: 90 more canary requests take 900 in all
        (100, 100, 100, 0),
        (0, 0, 100, 200),  # no split seen yet: the shortfalls added
        (150, 20, 100, 680),  # stable answers 20 of 170: its 80 missing take 80 * 170 / 20 in all
    ],
)
def test_more_requests_needed(canary, stable, minimum, more):
    assert more_requests_needed(canary, stable, minimum) == more


def test_a_hold_says_how_many_more_requests():
    verdict = decide(dataclasses.replace(HEALTHY, canary_requests=10, stable_requests=90), CONFIG)
    assert verdict.more_requests == 900
    assert "about 900 more requests" in verdict.reasons[0]
