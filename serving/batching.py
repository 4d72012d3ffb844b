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

The other fields of TF Serving's `BatchingParameters`:

- `allowed_batch_sizes` is honoured as TF Serving's batching session does:
  a batch is padded up to the smallest allowed size that holds it, with
  copies of the first row of its last request, and the padding's outputs are
  dropped (tensorflow_serving/batching/batching_session.cc:496-497, 540-557).
- `enable_large_batch_splitting` is honoured: `max_batch_size` is then the
  largest request, `max_execution_batch_size` (default `max_batch_size`) the
  largest model call, and a larger request runs as several model calls whose
  outputs are joined in order (`GetQueueOptions`,
  tensorflow_serving/servables/tensorflow/bundle_factory_util.h:104-138).
- `pad_variable_length_inputs` and `thread_pool_name` are accepted and change
  nothing here: requests whose inner shapes differ never share a batch (each
  shape has its own queue), and the batch threads are this scheduler's own.

The file's values are checked when it is read, by TensorFlow's and TF
Serving's rules (`AddQueueAfterRewritingOptions` in
tensorflow/core/kernels/batching_util/shared_batch_scheduler.h;
batching_session.cc:1010-1050; bundle_factory_util.cc:113-125) and two of
this server's (`MAX_BATCH_TIMEOUT_MICROS`, `MAX_BATCH_THREADS`); a bad value
is bad input naming the file and the field (exit code 2).

A batch thread never dies: a failure while batching goes to the requests of
that batch (or, outside any batch, to every queued request), is logged
(rate-limited), and the thread goes on. A queued request whose caller is
gone is dropped before it is batched: CANCELLED when the client left, and
RESOURCE_EXHAUSTED "Run() timeout exceeded while waiting in batching queue"
when its deadline passed in the queue (batching_session.cc:746-774); a caller
stops waiting for a queued request at its deadline. `drain` runs every
queued batch at once (shutdown); `stop` answers what is still queued with
UNAVAILABLE.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import math
import os
import threading
import time
from collections.abc import Iterator

import numpy as np

from core.errors import InputError
from serving.calls import NO_CALL, Call
from serving.log_limit import LogLimit
from serving.protos import BatchingParameters, read_text_proto
from serving.servable import InvalidRequestError, LoadedVersion, ServingStatusError

log = logging.getLogger(__name__)
FLAG = "--batching-parameters-file"
# A partial batch waits this long for more requests. A minute is past any client's deadline (this
# project's client: 10 s; TF Serving's REST: 30 s), so a longer wait only times every partial batch out:
# a mistake in the file (issue #20: INT64_MAX was accepted and the first request killed the threads).
MAX_BATCH_TIMEOUT_MICROS = 60_000_000
# Each batch thread is an OS thread; TF Serving's default is one per core, and past this many they only
# contend for the cores (a huge value would fail at start, or slowly, for want of threads).
MAX_BATCH_THREADS = 1024
QUEUE_FULL = "The batch scheduling queue to which this task was submitted is full"
QUEUE_TIMEOUT = "Run() timeout exceeded while waiting in batching queue"
SHUTTING_DOWN = "the server is shutting down"
_WRAPPED_FIELDS = (
    "max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads",
    "enable_large_batch_splitting", "max_execution_batch_size",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
    """TF Serving's BatchingParameters, with its defaults; `from_file` reads and checks them."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = os.cpu_count() or 1
    allowed_batch_sizes: tuple[int, ...] = ()
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int | None = None
    pad_variable_length_inputs: bool = False

    @classmethod
    def from_file(cls, path: str) -> BatchingOptions:
        """Options from a BatchingParameters text file; fields it leaves out keep TF Serving's defaults."""
        proto = read_text_proto(path, BatchingParameters, FLAG)
        values = {f: getattr(proto, f).value for f in _WRAPPED_FIELDS if proto.HasField(f)}
        options = cls(
            **values,
            allowed_batch_sizes=tuple(proto.allowed_batch_sizes),
            pad_variable_length_inputs=proto.pad_variable_length_inputs,
        )
        if options.max_enqueued_batches == 0 and not options.enable_large_batch_splitting:
            options = dataclasses.replace(options, max_enqueued_batches=1)  # as TensorFlow's AddQueue
        problem = options.problem()
        if problem is not None:
            raise InputError(f"{FLAG} {path}: {problem}")
        return options

    @property
    def execution_batch_size(self) -> int:
        """The most rows one model call gets."""
        if self.enable_large_batch_splitting and self.max_execution_batch_size is not None:
            return self.max_execution_batch_size
        return self.max_batch_size

    def problem(self) -> str | None:
        """What is wrong with these options, naming the field; None when they can be used."""
        if self.max_batch_size < 1:
            return f"max_batch_size must be positive; was {self.max_batch_size}"
        if not 0 <= self.batch_timeout_micros <= MAX_BATCH_TIMEOUT_MICROS:
            return (
                f"batch_timeout_micros must be between 0 and {MAX_BATCH_TIMEOUT_MICROS} (one minute); "
                f"was {self.batch_timeout_micros}"
            )
        if self.max_enqueued_batches < 1:
            return f"max_enqueued_batches must be positive; was {self.max_enqueued_batches}"
        if not 1 <= self.num_batch_threads <= MAX_BATCH_THREADS:
            return (
                f"num_batch_threads must be between 1 and {MAX_BATCH_THREADS}; was {self.num_batch_threads}"
            )
        return self._splitting_problem() or self._allowed_sizes_problem()

    def _splitting_problem(self) -> str | None:
        if self.max_execution_batch_size is None:
            return None
        if not self.enable_large_batch_splitting:
            return "max_execution_batch_size is used only with enable_large_batch_splitting { value: true }"
        if not 1 <= self.max_execution_batch_size <= self.max_batch_size:
            return (
                f"max_execution_batch_size must be between 1 and max_batch_size ({self.max_batch_size}); "
                f"was {self.max_execution_batch_size}"
            )
        return None

    def _allowed_sizes_problem(self) -> str | None:
        sizes = self.allowed_batch_sizes
        if not sizes:
            return None
        if sizes[0] < 1 or any(b <= a for a, b in itertools.pairwise(sizes)):
            return f"allowed_batch_sizes entries must be positive and increasing; were {list(sizes)}"
        limit = "max_execution_batch_size" if self.enable_large_batch_splitting else "max_batch_size"
        if sizes[-1] != self.execution_batch_size:
            return (
                f"Last entry in allowed_batch_sizes must match {limit}; last entry was {sizes[-1]}; "
                f"expected {self.execution_batch_size}"
            )
        return None

    def padded_size(self, rows: int) -> int:
        """The rows a batch of `rows` runs with: the smallest allowed batch size that holds it."""
        return next((size for size in self.allowed_batch_sizes if size >= rows), rows)


@dataclasses.dataclass(eq=False)  # a task is itself: queues find and remove it by identity
class _Task:
    loaded: LoadedVersion
    signature: str
    arrays: dict[str, np.ndarray]
    rows: int
    call: Call = NO_CALL
    enqueued: float = dataclasses.field(default_factory=time.monotonic)
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    outputs: dict[str, np.ndarray] | None = None
    error: Exception | None = None

    def answer(self, error: Exception) -> None:
        self.error = error
        self.done.set()

    def status_if_gone(self) -> ServingStatusError | None:
        """What to answer a queued request whose caller is gone (TF Serving's codes), else None."""
        status = self.call.gone()
        if status is not None and status.code == "DEADLINE_EXCEEDED":
            return ServingStatusError(QUEUE_TIMEOUT, "RESOURCE_EXHAUSTED")  # batching_session.cc:770-774
        return status


def merged_input(batch: list[_Task], key: str, padding: int) -> np.ndarray:
    """One input of a batch: its requests' rows, then `padding` copies of the last request's first row.

    The padding is TF Serving's (batching_session.cc:540-557): a row of a real
    request is always a valid input.
    """
    parts = [task.arrays[key] for task in batch]
    if padding:
        parts.append(np.repeat(parts[-1][:1], padding, axis=0))
    return np.concatenate(parts)


class BatchScheduler:
    """Batches `LoadedVersion.run` calls across concurrent requests (see the module docstring)."""

    def __init__(self, options: BatchingOptions):
        self.options = options
        self.batches_run = 0
        self.rows_run = 0
        self._queues: dict[tuple, collections.deque[_Task]] = {}
        self._condition = threading.Condition()
        self._draining = False
        self._stopped = False
        self._log_limit = LogLimit(log)
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

    # --- the caller's side ---------------------------------------------------------------------
    def run(
        self, loaded: LoadedVersion, signature: str, arrays: dict[str, np.ndarray], call: Call = NO_CALL
    ) -> dict[str, np.ndarray]:
        """What `loaded.run(signature, arrays)` returns, computed in a batch with other requests."""
        rows = {a.shape[0] if a.ndim else -1 for a in arrays.values()}
        if len(rows) != 1 or -1 in rows:  # no common batch dimension: nothing to batch with
            call.check()
            return loaded.run(signature, arrays)
        total = rows.pop()
        if total > self.options.max_batch_size:
            raise InvalidRequestError(
                f"Task size {total} is larger than maximum input batch size {self.options.max_batch_size}"
            )
        tasks = [_Task(loaded, signature, part, rows, call) for part, rows in self._split(arrays, total)]
        self._enqueue(tasks)
        outputs = self._await(tasks)
        if len(outputs) == 1:
            return outputs[0]
        return {key: np.concatenate([o[key] for o in outputs]) for key in outputs[0]}

    def _split(self, arrays: dict[str, np.ndarray], rows: int) -> Iterator[tuple[dict[str, np.ndarray], int]]:
        """The request in pieces of at most one model call's rows, with their rows (one unless splitting)."""
        step = self.options.execution_batch_size
        for start in range(0, rows, step):
            yield {key: array[start : start + step] for key, array in arrays.items()}, min(step, rows - start)

    def _enqueue(self, tasks: list[_Task]) -> None:
        step = self.options.execution_batch_size
        with self._condition:
            if self._stopped:
                raise ServingStatusError(SHUTTING_DOWN, "UNAVAILABLE")
            waiting = sum(math.ceil(sum(t.rows for t in q) / step) for q in self._queues.values())
            if waiting >= self.options.max_enqueued_batches:
                raise ServingStatusError(QUEUE_FULL, "UNAVAILABLE")
            self._queues.setdefault(self._key(tasks[0]), collections.deque()).extend(tasks)
            self._condition.notify()

    def _await(self, tasks: list[_Task]) -> list[dict[str, np.ndarray]]:
        """Each task's outputs; at the caller's deadline, its tasks still queued are withdrawn."""
        call = tasks[0].call
        for task in tasks:
            if not task.done.wait(call.remaining()):
                with self._condition:
                    withdrawn = [self._withdraw(t) for t in tasks]
                if any(withdrawn):
                    raise ServingStatusError(QUEUE_TIMEOUT, "RESOURCE_EXHAUSTED")
                task.done.wait()  # a batch thread has it: its model call is under way
            if task.error is not None:
                with self._condition:  # the other pieces of a split request need not run
                    for other in tasks:
                        self._withdraw(other)
                raise task.error
        return [task.outputs for task in tasks]

    def _withdraw(self, task: _Task) -> bool:
        """Take a task out of its queue (the lock held); whether it was still there."""
        key = self._key(task)
        queue = self._queues.get(key)
        if queue is None or task not in queue:
            return False
        queue.remove(task)
        if not queue:
            del self._queues[key]
        return True

    # --- the batch threads ---------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            batch: list[_Task] = []
            try:
                batch = self._next_batch()
                if batch is None:
                    return
                self._run(batch)
            except Exception as err:  # a batch thread never dies: the error goes to who waits for it
                self._log_limit.log(logging.ERROR, "batching", "batching failed: %r", err)
                status = ServingStatusError(f"batching failed: {err}", "INTERNAL")
                for task in batch or self._take_everything():
                    task.answer(status)

    def _next_batch(self) -> list[_Task] | None:
        """The next batch to run (waiting until one is due), or None once stopped."""
        with self._condition:
            while not self._stopped:
                now = time.monotonic()
                key = self._ready(now)
                if key is not None:
                    batch = self._take(key)
                    if batch:
                        return batch
                    continue
                self._condition.wait(self._seconds_to_next_due(now))
        return None

    def _ready(self, now: float) -> tuple | None:
        """A queue whose batch should run now: full, its oldest request waited long enough, or draining."""
        timeout = self.options.batch_timeout_micros / 1e6
        oldest = None
        for key, queue in self._queues.items():
            due = (
                self._draining
                or sum(t.rows for t in queue) >= self.options.execution_batch_size
                or now - queue[0].enqueued >= timeout
            )
            if due and (oldest is None or queue[0].enqueued < self._queues[oldest][0].enqueued):
                oldest = key
        return oldest

    def _seconds_to_next_due(self, now: float) -> float | None:
        """How long to wait for the next batch to be due; None (until notified) when nothing is queued."""
        pending = [q[0].enqueued for q in self._queues.values()]
        if not pending:
            return None
        due = min(pending) + self.options.batch_timeout_micros / 1e6
        return min(max(0.0, due - now), threading.TIMEOUT_MAX)

    def _take(self, key: tuple) -> list[_Task]:
        """The next batch of a queue; requests whose caller is gone are answered and left out."""
        queue, batch, rows = self._queues[key], [], 0
        while queue and rows + queue[0].rows <= self.options.execution_batch_size:
            task = queue.popleft()
            gone = task.status_if_gone()
            if gone is not None:
                task.answer(gone)
                continue
            rows += task.rows
            batch.append(task)
        if not queue:
            del self._queues[key]
        return batch

    def _take_everything(self) -> list[_Task]:
        with self._condition:
            tasks = [task for queue in self._queues.values() for task in queue]
            self._queues.clear()
        return tasks

    def _run(self, batch: list[_Task]) -> None:
        """One model call for the batch (padded to an allowed size); each request gets its rows."""
        first, rows = batch[0], sum(t.rows for t in batch)
        padding = self.options.padded_size(rows) - rows
        try:
            merged = {key: merged_input(batch, key, padding) for key in first.arrays}
            outputs = first.loaded.run(first.signature, merged)
            if any(v.ndim == 0 or v.shape[0] != rows + padding for v in outputs.values()):
                raise ServingStatusError("an output of the batched call has no batch dimension", "INTERNAL")
        except ServingStatusError as err:  # every request of the batch gets the batch's error
            for task in batch:
                task.answer(err)
            return
        start = 0
        for task in batch:
            task.outputs = {k: v[start : start + task.rows] for k, v in outputs.items()}
            task.done.set()
            start += task.rows
        self.batches_run += 1
        self.rows_run += rows

    # --- shutdown -------------------------------------------------------------------------------
    def drain(self) -> None:
        """Run every queued batch now, without waiting for its timeout (the server is stopping)."""
        with self._condition:
            self._draining = True
            self._condition.notify_all()

    def stop(self) -> None:
        """Stop the batch threads; requests still queued are answered UNAVAILABLE."""
        with self._condition:
            self._stopped = True
            self._condition.notify_all()
        for task in self._take_everything():
            task.answer(ServingStatusError(SHUTTING_DOWN, "UNAVAILABLE"))
