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

Per version. TF Serving's metrics are per model only (tensorflow/serving#1970),
so a canary cannot be told from stable on them. Requests a version answered
(Predict, Classify, Regress, MultiInference) are also counted by model,
version, the version's label (`stable`, `canary`, or empty) and status in
`fmnist_version_request_count`, and the answered ones timed in
`fmnist_version_request_latency` (microseconds, TF Serving's buckets, by API):
from the version's lookup to the answer, so wire and JSON parsing are left
out, alike for every version (the log proxy times its call to TF Serving).
A request that fails before any version is chosen (an unknown model or
label) counts only in TF Serving's metric. A version's series go when it is
unloaded, so they do not pile up over months of pushes.

Bounded labels. TF Serving labels `request_count` with the model name the
client sent (`RecordModelRequestCount`, servables/tensorflow/util.cc:117-122),
so a client looping over random names creates a series each, until the
exporter's memory and every dashboard give out. Here a name the server does
not serve (not configured, and never answered) is counted as `_unserved`,
which no model can be called (model names start with a letter or digit).
Every other label value comes from the configuration or a fixed set.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily

from serving.servable import ServingStatusError

DEFAULT_PATH = "/monitoring/prometheus/metrics"  # PrometheusExporter::kPrometheusPath
LATENCY_BUCKETS_US = tuple(10 * 1.8**i for i in range(33))
UNSERVED = "_unserved"  # the model name label of requests for models not served
VERSION_LABELS = ["model_name", "version", "label"]
# Per-version series (read back by `fmnist canary`, monitoring/version_metrics.py).
VERSION_REQUESTS = "fmnist_version_request_count"
VERSION_LATENCY = "fmnist_version_request_latency"


class ServingMetrics:
    """The server's metrics in their own registry (several servers can live in one test process)."""

    def __init__(self, serves: Callable[[str], bool] = lambda name: False) -> None:
        """`serves(name)`: whether a model name is served (configured), so that it may label a series."""
        self.serves = serves
        self._answered: set[str] = set()  # names answered OK once: served here, or by a proxy's upstream
        self._lock = threading.Lock()
        self._version_series: dict[tuple[str, str], set[tuple]] = {}
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
        self.version_requests = Counter(
            VERSION_REQUESTS, "Requests a model version answered, by status.",
            [*VERSION_LABELS, "status"], registry=self.registry,
        )  # fmt: skip
        self.version_latency = Histogram(
            VERSION_LATENCY,
            "Wall time (in microseconds) of the requests a model version answered, from its lookup.",
            [*VERSION_LABELS, "API"], buckets=LATENCY_BUCKETS_US, registry=self.registry,
        )  # fmt: skip

    def model_label(self, model_name: str, status: str) -> str:
        """The model name as a label value: itself when served (or just answered), else `UNSERVED`."""
        if status == "OK":
            self._answered.add(model_name)  # only a served model answers OK: the set stays bounded
            return model_name
        return model_name if model_name in self._answered or self.serves(model_name) else UNSERVED

    @contextlib.contextmanager
    def request(self, model_name: str, api: str, entrypoint: str) -> Iterator[dict]:
        """Count a request under its final status and time it; the caller sets `outcome["status"]`."""
        outcome = {"status": "OK"}
        started = time.perf_counter()
        try:
            yield outcome
        finally:
            status = outcome["status"]
            self.request_count.labels(self.model_label(model_name, status), status).inc()
            if outcome["status"] == "OK":
                elapsed_us = (time.perf_counter() - started) * 1e6
                self.request_latency.labels(model_name, api, entrypoint).observe(elapsed_us)

    @contextlib.contextmanager
    def answering(self, model_name: str, version: int, label: str, api: str) -> Iterator[None]:
        """Count and time what runs inside as answered by this version; its status from what it raises."""
        started, status = time.perf_counter(), "OK"
        try:
            yield
        except ServingStatusError as err:
            status = err.code
            raise
        except Exception:
            status = "INTERNAL"
            raise
        finally:
            self.observe_answer(model_name, version, label, api, status, time.perf_counter() - started)

    def observe_answer(
        self, model_name: str, version: int, label: str, api: str, status: str, seconds: float
    ) -> None:
        """One request answered (or refused) by `version`: counted by status, timed when OK."""
        key = (model_name, str(version))
        self.version_requests.labels(*key, label, status).inc()
        if status == "OK":
            self.version_latency.labels(*key, label, api).observe(seconds * 1e6)
        with self._lock:
            self._version_series.setdefault(key, set()).add((label, status, api if status == "OK" else None))

    def forget_version(self, model_name: str, version: int) -> None:
        """Remove an unloaded version's per-version series (the page would otherwise keep every version)."""
        key = (model_name, str(version))
        with self._lock:
            series = self._version_series.pop(key, set())
        for label, status, api in series:
            with contextlib.suppress(KeyError):  # removed already (a label recorded twice)
                self.version_requests.remove(*key, label, status)
            if api is not None:
                with contextlib.suppress(KeyError):
                    self.version_latency.remove(*key, label, api)

    def observe_version(self, name: str, version: int, path: str, event: str) -> None:
        """A `VersionManager` observer: load attempts (TF Serving's metric) and which versions answer."""
        if event in ("AVAILABLE", "FAILED"):
            self.load_attempts.labels(path, "success" if event == "AVAILABLE" else "fail").inc()
        self.available.labels(name, str(version)).set(1 if event == "AVAILABLE" else 0)
        if event == "UNLOADED":
            self.forget_version(name, version)

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
