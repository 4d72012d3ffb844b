"""Rate-limited log lines: a server must not let what a client or a broken disk does flood its log.

A line per request or per poll, repeated for hours, costs disk and hides
everything else (issue #20: 100 bad requests wrote 18 MB of tracebacks).
`LogLimit` writes the first line of each kind, then at most one per
`seconds`, saying how many it left out in between.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable

DEFAULT_SECONDS = 60.0


class LogLimit:
    """At most one line per key every `seconds` to `logger`; thread-safe."""

    def __init__(
        self,
        logger: logging.Logger,
        seconds: float = DEFAULT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.logger = logger
        self.seconds = seconds
        self.clock = clock
        self._last: dict[Hashable, float] = {}
        self._left_out: dict[Hashable, int] = {}
        self._lock = threading.Lock()

    def log(self, level: int, key: Hashable, message: str, *args) -> bool:
        """Log `message % args` unless a line of `key` went out less than `seconds` ago; whether it did."""
        now = self.clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.seconds:
                self._left_out[key] = self._left_out.get(key, 0) + 1
                return False
            self._last[key] = now
            left_out = self._left_out.pop(key, 0)
        if left_out:
            message += f" ({left_out} more like this in the last {self.seconds:.0f} s not logged)"
        self.logger.log(level, message, *args)
        return True

    def forget(self, key: Hashable) -> None:
        """The condition of `key` is over: its next line goes out at once."""
        with self._lock:
            self._last.pop(key, None)
            self._left_out.pop(key, None)
