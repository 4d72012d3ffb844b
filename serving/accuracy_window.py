"""Each served version's accuracy, estimated without labels over its newest answers, as Prometheus gauges.

A version that carries an estimator (`<version>/assets.extra/accuracy_estimate.json`,
written with the model; `core/accuracy_estimate.py`) keeps the probabilities
of its newest `size` answers (one row per image) in a bounded buffer. At a
scrape the estimate over the buffer is recomputed, at most once every
`REFRESH_SECONDS` and only when new answers came, and exported per model,
version and label:

- `fmnist_estimated_accuracy`, `fmnist_estimated_accuracy_low`,
  `fmnist_estimated_accuracy_high`: the estimate and its 90 % interval
  (fractions);
- `fmnist_estimated_accuracy_images`: how many answers (images) the window
  holds; a request of 32 images adds 32. The estimate's precision grows with
  it, so an alert should ask for enough of them.

The request path only copies the answer's probabilities into the buffer
(under a lock held for an append): the estimate is never computed while a
client waits. Answers that are not probabilities (another model's outputs,
rows that do not sum to 1) are not kept, and a version without an estimator
keeps nothing and exports nothing; both are said once in the log.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping

import numpy as np
from prometheus_client.core import GaugeMetricFamily

from core.accuracy_estimate import Estimate, Estimator, checked_probabilities, estimator_path, load_estimator
from core.errors import InputError
from serving.log_limit import LogLimit
from serving.traffic_split import label_of

log = logging.getLogger(__name__)
REFRESH_SECONDS = 5.0
GAUGES = {
    "fmnist_estimated_accuracy": "Accuracy estimated without labels over the version's newest answers.",
    "fmnist_estimated_accuracy_low": "Lower end of the estimate's 90 % interval.",
    "fmnist_estimated_accuracy_high": "Upper end of the estimate's 90 % interval.",
    "fmnist_estimated_accuracy_images": "Answers (images) in the window the estimate is computed over.",
}


@dataclasses.dataclass
class _Window:
    """One version's estimator, its newest answers, and the estimate last computed from them."""

    estimator: Estimator
    size: int
    rows: collections.deque = dataclasses.field(default_factory=collections.deque)
    held: int = 0  # rows in `rows`
    added: int = 0  # rows ever added: the estimate is stale when this moved
    estimate: Estimate | None = None
    estimated_at: float = float("-inf")
    estimated_added: int = 0
    refused: bool = False  # answers that are not probabilities were seen (logged once)

    def add(self, probabilities: np.ndarray) -> None:
        kept = probabilities[-self.size :]
        self.rows.append(kept)
        self.held += len(kept)
        self.added += len(kept)
        while self.held - len(self.rows[0]) >= self.size:  # whole oldest arrays first
            self.held -= len(self.rows.popleft())
        if self.held > self.size:  # then the oldest rows of the oldest array
            excess = self.held - self.size
            self.rows[0] = self.rows[0][excess:]
            self.held -= excess

    def snapshot(self) -> np.ndarray:
        return np.concatenate(list(self.rows))


class AccuracyWindows:
    """The estimate of each loaded version that has an estimator; a `VersionManager` observer, a collector.

    `labels(model)` gives the model's labels now (label -> version), to name each version's series.
    """

    def __init__(
        self,
        size: int,
        labels: Callable[[str], Mapping[str, int]],
        refresh_seconds: float = REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ):
        if size < 1:
            raise ValueError(f"an estimate window holds at least 1 answer, got {size}")
        self.size = size
        self.labels = labels
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self._windows: dict[tuple[str, int], _Window] = {}
        self._lock = threading.Lock()
        self._log_limit = LogLimit(log)

    # --- versions come and go (the version manager's poller thread) ------------------------------------
    def observe_version(self, name: str, version: int, path: str, event: str) -> None:
        """A version became AVAILABLE: read its estimator; unloaded or failed: forget it."""
        if event != "AVAILABLE":
            with self._lock:
                self._windows.pop((name, version), None)
            return
        try:
            estimator = load_estimator(estimator_path(path))
        except InputError as err:
            log.warning("model %s version %s: %s; it gets no estimated accuracy", name, version, err)
            return
        with self._lock:
            self._windows[(name, version)] = _Window(estimator, self.size)

    # --- the request path: append only ---------------------------------------------------------------
    def add(self, name: str, version: int, probabilities: np.ndarray | None) -> None:
        """Keep one answer's probabilities [n, 10] for the version's estimate (none without an estimator)."""
        window = self._windows.get((name, version))
        if window is None or probabilities is None:
            return
        try:
            checked = checked_probabilities(probabilities).astype(np.float32)
        except InputError as err:
            if not window.refused:
                window.refused = True
                log.warning(
                    "model %s version %s answers no probabilities (%s): not estimated", name, version, err
                )
            return
        with self._lock:
            window.add(checked)

    # --- a scrape ------------------------------------------------------------------------------------------
    def _current(self, window: _Window) -> Estimate | None:
        """The window's estimate, recomputed when answers came and the last one is `refresh_seconds` old."""
        with self._lock:
            stale = window.added != window.estimated_added
            due = self.clock() - window.estimated_at >= self.refresh_seconds
            if not window.held or not (stale and due):
                return window.estimate
            rows, added = window.snapshot(), window.added
        estimate = window.estimator.estimate(rows)  # outside the lock: answers keep being added meanwhile
        with self._lock:
            window.estimate, window.estimated_at, window.estimated_added = estimate, self.clock(), added
        return estimate

    def collect(self):
        families = {name: GaugeMetricFamily(name, text, labels=["model_name", "version", "label"])
                    for name, text in GAUGES.items()}  # fmt: skip
        with self._lock:
            windows = sorted(self._windows.items())
        for (name, version), window in windows:
            try:
                estimate = self._current(window)
            except Exception as err:  # a scrape must still show every other metric
                message = "estimating model %s version %s failed: %r"
                self._log_limit.log(logging.ERROR, (name, version), message, name, version, err)
                continue
            if estimate is None:
                continue
            key = [name, str(version), label_of(self.labels(name), version)]
            values = (estimate.value, estimate.low, estimate.high, estimate.n)
            for family, value in zip(families.values(), values, strict=True):
                family.add_metric(key, value)
        yield from families.values()
