"""The caller of a request, as the server sees it: is anyone still waiting for the answer, and until when?

A call whose deadline has passed, or whose client has gone, gets no model
work: 20 gRPC calls whose 10 ms deadline had passed once used 8.5 s of CPU
and delayed the next good call by 3.2 s (issue #20). TF Serving bounds the
model's run by the call's deadline (`run_options.set_timeout_in_ms` from
`context->raw_deadline()`, tensorflow_serving/model_servers/prediction_service_impl.cc:43-46;
a run past it fails with DEADLINE_EXCEEDED); here the deadline is checked
before the work starts (`Call.check`), and the batch queue drops queued
requests whose caller is gone (`serving/batching.py`). A model call already
running is not interrupted: TensorFlow 2's Python API cancels function calls
only through one process-wide context (tensorflow/python/eager/cancellation.py),
not per request thread.

REST calls and warmup replays have no deadline and cannot be cancelled:
`Call` (`NO_CALL` when there is no client at all).

A call also says who the client is, when it says so (`client_id`, from the
gRPC metadata or HTTP header `x-client-id`): the traffic split keeps one
client on one version (`serving/traffic_split.py`).
"""

from __future__ import annotations

from serving.servable import ServingStatusError
from serving.traffic_split import client_id_from_metadata

# gRPC reports "no deadline" as a deadline about 292 billion years away (gpr_inf_future).
_NO_DEADLINE_BEYOND_SECONDS = 1e9
DEADLINE_EXCEEDED = "Deadline Exceeded"  # gRPC's own message for the status
CANCELLED = "the client cancelled the call"


class Call:
    """A caller without a deadline that never goes away (REST, warmup); see `GrpcCall` for gRPC's."""

    def __init__(self, client_id: str | None = None) -> None:
        self._client_id = client_id or None

    @property
    def client_id(self) -> str | None:
        """The id the client sent to stay on one version of a traffic split, or None."""
        return self._client_id

    def remaining(self) -> float | None:
        """Seconds until the deadline (0 once passed), or None without one."""
        return None

    def active(self) -> bool:
        """Whether the client still waits for the answer."""
        return True

    def gone(self) -> ServingStatusError | None:
        """The status to answer when no one waits any more (deadline passed, client left), else None."""
        remaining = self.remaining()
        if remaining is not None and remaining <= 0:
            return ServingStatusError(DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED")
        if not self.active():
            return ServingStatusError(CANCELLED, "CANCELLED")
        return None

    def check(self) -> None:
        """Raise `gone()`'s status, if any: called before any model work starts."""
        status = self.gone()
        if status is not None:
            raise status


NO_CALL = Call()


class GrpcCall(Call):
    """A gRPC call: its `ServicerContext` knows the deadline and whether the client cancelled."""

    def __init__(self, context) -> None:
        super().__init__()
        self.context = context

    @property
    def client_id(self) -> str | None:
        return client_id_from_metadata(self.context.invocation_metadata())

    def remaining(self) -> float | None:
        remaining = self.context.time_remaining()
        return None if remaining is None or remaining > _NO_DEADLINE_BEYOND_SECONDS else remaining

    def active(self) -> bool:
        return self.context.is_active()
