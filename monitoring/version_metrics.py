"""Per-version requests, failures and p99 latency, read from a server's Prometheus page.

Request logs hold only answered requests and no timings, so the canary
verdict reads these from the page `fmnist serve` or `fmnist log-proxy`
publish (`serving/metrics.py`): `fmnist_version_request_count` by status and
the `fmnist_version_request_latency` histogram, summed over labels and APIs.
The counters run from the version's load, which for a canary is the period
it has been serving; p99 is interpolated within its bucket as Prometheus's
`histogram_quantile` does.
"""

from __future__ import annotations

import dataclasses
import math
import urllib.error
import urllib.request
from collections import defaultdict

from prometheus_client.parser import text_string_to_metric_families

from core.errors import ServingError
from serving.metrics import VERSION_LATENCY, VERSION_REQUESTS

OK = "OK"
MICROSECONDS_PER_MS = 1000.0
PAGE_TIMEOUT_SECONDS = 10


@dataclasses.dataclass(frozen=True)
class VersionCalls:
    """Requests one version was asked, how many failed, and its p99 latency (None without answers)."""

    calls: int
    failed: int
    p99_ms: float | None

    @property
    def error_rate(self) -> float | None:
        return self.failed / self.calls if self.calls else None


def read_page(url: str) -> str:
    """The metrics page's text; ServingError (exit 1) naming the URL when it cannot be read."""
    try:
        with urllib.request.urlopen(url, timeout=PAGE_TIMEOUT_SECONDS) as response:
            return response.read().decode("utf-8")
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise ServingError(f"--metrics-url {url}: could not read the metrics page ({err})") from None


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """The q-quantile of a cumulative histogram [(upper bound, count)], interpolated in its bucket."""
    buckets = sorted(buckets)
    total = buckets[-1][1] if buckets else 0
    if not total:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower  # beyond the last finite bucket: its bound, as Prometheus answers
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = bound, count
    return lower


def version_calls(page: str, model: str, version: int) -> VersionCalls:
    """What the page says of `model` `version` (zeros when it has no series for it)."""
    calls, failed = 0, 0
    buckets: dict[float, float] = defaultdict(float)
    wanted = {"model_name": model, "version": str(version)}
    for family in text_string_to_metric_families(page):
        if family.name not in (VERSION_REQUESTS, VERSION_LATENCY):
            continue
        for sample in family.samples:
            if any(sample.labels.get(k) != v for k, v in wanted.items()):
                continue
            if sample.name == f"{VERSION_REQUESTS}_total":
                calls += int(sample.value)
                failed += 0 if sample.labels.get("status") == OK else int(sample.value)
            elif sample.name == f"{VERSION_LATENCY}_bucket":
                buckets[float(sample.labels["le"])] += sample.value
    p99_us = quantile(0.99, list(buckets.items()))
    return VersionCalls(calls, failed, None if p99_us is None else p99_us / MICROSECONDS_PER_MS)
