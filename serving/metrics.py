"""Prometheus metrics under TF Serving's names, through prometheus_client.

TF Serving exports its monitoring metrics with `/` turned into `:`
(`tensorflow_serving/util/prometheus_exporter.cc`), so the names are
`:tensorflow:serving:request_count` (labels `model_name`, `status`),
`:tensorflow:serving:request_latency` (labels `model_name`, `API`,
`entrypoint`; microseconds, buckets 10 * 1.8^i for i < 33, as TF Serving's
`servables/tensorflow/util.cc`), `:tensorflow:serving:runtime_latency` (the
model call alone) and `:tensorflow:cc:saved_model:load_attempt_count`
(labels `model_path`, `status`). One difference: prometheus_client writes a
counter's samples with the `_total` suffix OpenMetrics asks for, where TF
Serving's own exporter writes none. The state of each version, which TF
Serving has no metric for, is `fmnist_model_version_available` (1 while it
answers), and `fmnist_request_log_records` counts request-log records
written and dropped. Enabled as TF Serving enables it: `--monitoring_config_file` with
`prometheus_config { enable: true path: "..." }`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily

DEFAULT_PATH = "/monitoring/prometheus/metrics"  # PrometheusExporter::kPrometheusPath
LATENCY_BUCKETS_US = tuple(10 * 1.8**i for i in range(33))


class ServingMetrics:
    """The server's metrics in their own registry (several servers can live in one test process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.request_count = Counter(
            ":tensorflow:serving:request_count", "The total number of requests.",
            ["model_name", "status"], registry=self.registry,
        )  # fmt: skip
        self.request_latency = Histogram(
            ":tensorflow:serving:request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ["model_name", "API", "entrypoint"], buckets=LATENCY_BUCKETS_US, registry=self.registry,
        )  # fmt: skip
        self.runtime_latency = Histogram(
            ":tensorflow:serving:runtime_latency",
            "Distribution of wall time (in microseconds) for Tensorflow runtime.",
            ["model_name", "API", "runtime"], buckets=LATENCY_BUCKETS_US, registry=self.registry,
        )  # fmt: skip
        self.load_attempts = Counter(
            ":tensorflow:cc:saved_model:load_attempt_count",
            "The number of times a SavedModel was successfully loaded.",
            ["model_path", "status"], registry=self.registry,
        )  # fmt: skip
        self.available = Gauge(
            "fmnist_model_version_available", "1 while a model version is AVAILABLE, else 0.",
            ["model_name", "version"], registry=self.registry,
        )  # fmt: skip

    @contextlib.contextmanager
    def request(self, model_name: str, api: str, entrypoint: str) -> Iterator[dict]:
        """Count a request under its final status and time it; the caller sets `outcome["status"]`."""
        outcome = {"status": "OK"}
        started = time.perf_counter()
        try:
            yield outcome
        finally:
            self.request_count.labels(model_name, outcome["status"]).inc()
            if outcome["status"] == "OK":
                elapsed_us = (time.perf_counter() - started) * 1e6
                self.request_latency.labels(model_name, api, entrypoint).observe(elapsed_us)

    def observe_version(self, name: str, version: int, path: str, event: str) -> None:
        """A `VersionManager` observer: load attempts (TF Serving's metric) and which versions answer."""
        if event in ("AVAILABLE", "FAILED"):
            self.load_attempts.labels(path, "success" if event == "AVAILABLE" else "fail").inc()
        self.available.labels(name, str(version)).set(1 if event == "AVAILABLE" else 0)

    def watch_request_log(self, logger) -> None:
        """Export a `RequestLogger`'s written and dropped records, read from it at each scrape."""
        self.registry.register(_RequestLogCollector(logger))

    def page(self) -> bytes:
        return generate_latest(self.registry)


class _RequestLogCollector:
    """`fmnist_request_log_records`: records written, and dropped by reason (serving never waits on it)."""

    def __init__(self, logger) -> None:
        self.logger = logger

    def collect(self):
        stats = self.logger.stats()
        family = CounterMetricFamily(
            "fmnist_request_log_records",
            "Request-log records written, and dropped by reason (a failed write never fails a request).",
            labels=["outcome", "reason"],
        )
        family.add_metric(["written", ""], stats["written"])
        for reason, count in sorted(stats["dropped"].items()):
            family.add_metric(["dropped", reason], count)
        yield family
