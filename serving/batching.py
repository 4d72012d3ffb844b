"""Server-side request batching with TF Serving's parameters (`--enable_batching --batching_parameters_file`).

Concurrent requests for the same model version, signature and input
dtypes/inner shapes wait in a queue; a batch thread concatenates them along
the batch dimension, calls the model once, and hands each request its rows of
the outputs. As in TF Serving's `BasicBatchScheduler`: a batch is formed when
it holds `max_batch_size` rows, or when its oldest request has waited
`batch_timeout_micros` and a thread is free (0: at once); `num_batch_threads`
threads run batches; a request larger than `max_batch_size` is refused
(INVALID_ARGUMENT), and one arriving while `max_enqueued_batches` batches are
waiting gets UNAVAILABLE. Defaults are TF Serving's (max_batch_size 1000,
batch_timeout_micros 0, max_enqueued_batches 10, one thread per core).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import threading
import time

import numpy as np

from core.errors import InputError
from serving.protos import BatchingParameters, read_text_proto
from serving.servable import InvalidRequestError, LoadedVersion, ServingStatusError


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = os.cpu_count() or 1

    @classmethod
    def from_file(cls, path: str) -> BatchingOptions:
        """Options from a BatchingParameters text file; fields it leaves out keep TF Serving's defaults."""
        proto = read_text_proto(path, BatchingParameters, "--batching-parameters-file")
        values = {
            f.name: getattr(proto, f.name).value for f in dataclasses.fields(cls) if proto.HasField(f.name)
        }
        options = cls(**values)
        for f in dataclasses.fields(cls):
            minimum = 0 if f.name == "batch_timeout_micros" else 1
            if getattr(options, f.name) < minimum:
                raise InputError(f"--batching-parameters-file {path}: {f.name} must be >= {minimum}")
        return options


@dataclasses.dataclass
class _Task:
    loaded: LoadedVersion
    signature: str
    arrays: dict[str, np.ndarray]
    rows: int
    enqueued: float = dataclasses.field(default_factory=time.monotonic)
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    outputs: dict[str, np.ndarray] | None = None
    error: Exception | None = None


class BatchScheduler:
    """Batches `LoadedVersion.run` calls across concurrent requests (see the module docstring)."""

    def __init__(self, options: BatchingOptions):
        self.options = options
        self.batches_run = 0
        self.rows_run = 0
        self._queues: dict[tuple, collections.deque[_Task]] = {}
        self._condition = threading.Condition()
        self._stopped = False
        self._threads = [
            threading.Thread(target=self._work, name=f"batch-{i}", daemon=True)
            for i in range(options.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _key(task: _Task) -> tuple:
        inputs = tuple((k, a.dtype.str, a.shape[1:]) for k, a in sorted(task.arrays.items()))
        return (task.loaded.name, task.loaded.version, id(task.loaded), task.signature, inputs)

    def run(
        self, loaded: LoadedVersion, signature: str, arrays: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """What `loaded.run(signature, arrays)` returns, computed in a batch with other requests."""
        rows = {a.shape[0] if a.ndim else -1 for a in arrays.values()}
        if len(rows) != 1 or -1 in rows:  # no common batch dimension: nothing to batch with
            return loaded.run(signature, arrays)
        task = _Task(loaded, signature, arrays, rows.pop())
        if task.rows > self.options.max_batch_size:
            raise InvalidRequestError(
                f"Task size {task.rows} is larger than maximum input batch size {self.options.max_batch_size}"
            )
        with self._condition:
            waiting = sum(
                math.ceil(sum(t.rows for t in q) / self.options.max_batch_size) for q in self._queues.values()
            )
            if waiting >= self.options.max_enqueued_batches:
                raise ServingStatusError(
                    "The batch scheduling queue to which this task was submitted is full", "UNAVAILABLE"
                )
            self._queues.setdefault(self._key(task), collections.deque()).append(task)
            self._condition.notify()
        task.done.wait()
        if task.error is not None:
            raise task.error
        return task.outputs

    def _ready(self, now: float) -> tuple | None:
        """A queue whose batch should run now: full, or its oldest request waited long enough."""
        timeout = self.options.batch_timeout_micros / 1e6
        oldest = None
        for key, queue in self._queues.items():
            if not queue:
                continue
            due = (
                sum(t.rows for t in queue) >= self.options.max_batch_size
                or now - queue[0].enqueued >= timeout
            )
            if due and (oldest is None or queue[0].enqueued < self._queues[oldest][0].enqueued):
                oldest = key
        return oldest

    def _take(self, key: tuple) -> list[_Task]:
        queue, batch, rows = self._queues[key], [], 0
        while queue and rows + queue[0].rows <= self.options.max_batch_size:
            rows += queue[0].rows
            batch.append(queue.popleft())
        if not queue:
            del self._queues[key]
        return batch

    def _work(self) -> None:
        while True:
            with self._condition:
                while True:
                    if self._stopped:
                        return
                    key = self._ready(time.monotonic())
                    if key is not None:
                        batch = self._take(key)
                        break
                    pending = [q[0].enqueued for q in self._queues.values() if q]
                    wait = None
                    if pending:
                        wait = max(
                            0.0, min(pending) + self.options.batch_timeout_micros / 1e6 - time.monotonic()
                        )
                    self._condition.wait(wait)
            self._run(batch)

    def _run(self, batch: list[_Task]) -> None:
        first = batch[0]
        try:
            merged = {k: np.concatenate([t.arrays[k] for t in batch]) for k in first.arrays}
            outputs = first.loaded.run(first.signature, merged)
            total = sum(t.rows for t in batch)
            if any(v.ndim == 0 or v.shape[0] != total for v in outputs.values()):
                raise ServingStatusError("an output of the batched call has no batch dimension", "INTERNAL")
            start = 0
            for task in batch:
                task.outputs = {k: v[start : start + task.rows] for k, v in outputs.items()}
                start += task.rows
            self.batches_run += 1
            self.rows_run += total
        except Exception as err:  # every request of the batch gets the batch's error
            for task in batch:
                task.error = err
        finally:
            for task in batch:
                task.done.set()

    def stop(self) -> None:
        with self._condition:
            self._stopped = True
            self._condition.notify_all()
