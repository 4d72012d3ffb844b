"""A TensorFlow Serving server for the pushed models (`fmnist serve`): TF Serving's gRPC and REST APIs.

It implements TF Serving's own protocol (the `tensorflow-serving-api` protos),
so any TF Serving client works unchanged against it, and this project's client
works unchanged against real TF Serving:

- PredictionService: Predict (`model_spec` with name, optional version or
  version label, signature; `inputs`; `output_filter`), Classify and Regress
  (`tf.Example`s as `example_list` or `example_list_with_context`),
  MultiInference (classify and regress tasks on one input), GetModelMetadata
  (`signature_def`).
- ModelService: GetModelStatus (every known version with TF Serving's states).
- REST on `rest_api_port` (`serving/rest_server.py`) and, with a monitoring
  config, Prometheus metrics (`serving/metrics.py`).

Status codes are TF Serving's (see `serving/servable.py`); a bad request never
takes the server down, and a call whose deadline has passed or whose client
has gone gets no model work (`serving/calls.py`). On SIGTERM or SIGINT,
in-flight gRPC and REST calls get 10 s (queued batches run at once), then the
process exits, even if a call is stuck. The gRPC port is bound without
SO_REUSEPORT (TF Serving issue #1288: with it, a second server on the same
port starts and the kernel splits clients between the two), so a busy port is
refused at start.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent import futures

import grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from core.config import ServingConfig
from core.errors import EXIT_FAILED, InputError
from serving.calls import GrpcCall
from serving.rest_server import RestServer
from serving.runtime import ServingRuntime
from serving.servable import ServingStatusError
from serving.version_manager import VersionManager

log = logging.getLogger(__name__)
GRPC = "GRPC"
SHUTDOWN_GRACE_SECONDS = 10.0  # what in-flight requests get on SIGTERM (the README's promise)
STOP_MARGIN_SECONDS = 5.0  # then the rest of the stop (model poller, request log) gets this long


@contextlib.contextmanager
def grpc_status(context, outcome: dict) -> Iterator[None]:
    """Answer a status error with its gRPC status (the server keeps serving) and record it for the metrics."""
    try:
        yield
    except ServingStatusError as err:
        outcome["status"] = err.code
        context.abort(grpc.StatusCode[err.code], str(err))


def message_size_options(max_message_mb: int) -> list[tuple[str, int]]:
    """gRPC options raising both message limits to `max_message_mb` (a batch of images is large)."""
    limit = max_message_mb * 2**20
    return [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]


def server_options(max_message_mb: int) -> list[tuple[str, int]]:
    """Message limits, and no SO_REUSEPORT: a second server on a busy port must fail, not share it."""
    return [*message_size_options(max_message_mb), ("grpc.so_reuseport", 0)]


def bind(server: grpc.Server, host: str, port: int, flag: str = "--port") -> int:
    """Bind `host:port`; a busy or unavailable address is bad input, named."""
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise InputError(
            f"{flag} {port}: cannot listen on {host}:{port} (in use, or not an address of this host)"
        )
    return bound


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """TF Serving's PredictionService over `ServingRuntime`: metrics and status codes around each call."""

    def __init__(self, runtime: ServingRuntime):
        self.runtime = runtime

    def _answer(self, api: str, model_name: str, context, work: Callable[[GrpcCall], object]):
        """`work(call)`'s answer; none is started for a call whose deadline passed or client left.

        A call can expire before its work starts (a busy CPU, a large request
        to read): it is answered DEADLINE_EXCEEDED (or CANCELLED) at once, and
        checked again right before the model call (`serving/calls.py`).
        """
        call = GrpcCall(context)
        with self.runtime.metrics.request(model_name, api, GRPC) as outcome, grpc_status(context, outcome):
            call.check()
            return work(call)

    def Predict(self, request, context):
        return self._answer(
            "Predict", request.model_spec.name, context, lambda call: self.runtime.predict(request, call)
        )

    def Classify(self, request, context):
        return self._answer(
            "Classify", request.model_spec.name, context, lambda call: self.runtime.classify(request, call)
        )

    def Regress(self, request, context):
        return self._answer(
            "Regress", request.model_spec.name, context, lambda call: self.runtime.regress(request, call)
        )

    def MultiInference(self, request, context):
        name = request.tasks[0].model_spec.name if request.tasks else ""
        return self._answer(
            "MultiInference", name, context, lambda call: self.runtime.multi_inference(request, call)
        )

    def GetModelMetadata(self, request, context):
        return self._answer(
            "GetModelMetadata", request.model_spec.name, context, lambda _: self.runtime.metadata(request)
        )


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, runtime: ServingRuntime):
        self.runtime = runtime

    def GetModelStatus(self, request, context):
        with grpc_status(context, {}):
            return self.runtime.status(request.model_spec)


def build_server(manager: VersionManager, config: ServingConfig, runtime: ServingRuntime | None = None):
    """A gRPC server (not started) with both services; returns it, its bound port and its runtime."""
    runtime = runtime or ServingRuntime.from_config(manager, config)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.workers), options=server_options(config.max_message_mb)
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(runtime), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(runtime), server)
    port = bind(server, config.host, config.port)
    return server, port, runtime


def make_manager(config: ServingConfig) -> VersionManager:
    """The version manager for `config`: its models.config (re-read when it changes), else its base path."""
    if config.model_config_file:
        return VersionManager(config_file=config.model_config_file, poll_seconds=config.poll_seconds)
    return VersionManager(config.model_base_path, config.poll_seconds)


@dataclasses.dataclass
class RunningServer:
    """A started server: gRPC (and REST) over one runtime and its version manager."""

    manager: VersionManager
    runtime: ServingRuntime
    grpc_server: grpc.Server
    port: int
    rest: RestServer | None

    @property
    def rest_port(self) -> int | None:
        return self.rest.port if self.rest else None

    def stop(self, grace_seconds: float | None = None) -> None:
        """Take no new calls; in-flight gRPC and REST calls get `grace_seconds` (together), then stop.

        Queued batches run at once rather than at their timeout; what is still
        queued when the grace is over is answered UNAVAILABLE.
        """
        grace = grace_seconds or 0.0
        grpc_stopped = self.grpc_server.stop(grace=grace_seconds)  # cancels what is left after the grace
        self.runtime.drain()
        if self.rest is not None:
            self.rest.stop(grace)  # drains REST while gRPC drains
        grpc_stopped.wait(grace + STOP_MARGIN_SECONDS)
        self.manager.stop()
        self.runtime.close()


def start(
    config: ServingConfig, manager: VersionManager | None = None, rest_port: int | None = None
) -> RunningServer:
    """Bind both ports (a busy one is bad input, before any model loads), load the models, start serving.

    REST listens on `config.rest_api_port` (0: no REST, as in TF Serving);
    `rest_port` overrides it (0 then means any free port, for tests).
    """
    manager = manager or make_manager(config)
    server, port, runtime = build_server(manager, config)
    rest_port = (config.rest_api_port or None) if rest_port is None else rest_port
    try:
        rest = RestServer(runtime, config, rest_port) if rest_port is not None else None
    except InputError:
        server.stop(grace=None)
        runtime.close()
        raise
    manager.start()
    server.start()
    return RunningServer(manager, runtime, server, port, rest)


def serve(config: ServingConfig) -> None:
    """Serve gRPC (and REST, metrics) until SIGTERM or SIGINT; in-flight requests get 10 s.

    The process always ends: if the orderly stop is not over a few seconds
    after the grace (a model call that never returns), it exits anyway.
    """
    running = start(config)
    where = f"gRPC on {config.host}:{running.port}"
    if running.rest is not None:
        where += f", REST on {config.host}:{running.rest_port}"
    models = running.manager.model_names() or "no models yet"
    print(f"serving {models} from {running.manager.where}; {where}", flush=True)
    wait_for_termination()
    exit_anyway_after(SHUTDOWN_GRACE_SECONDS + STOP_MARGIN_SECONDS)
    running.stop(grace_seconds=SHUTDOWN_GRACE_SECONDS)
    if running.runtime.logger is not None:
        print(running.runtime.logger.summary(), flush=True)


def wait_for_termination() -> None:
    """Block until SIGTERM or SIGINT."""
    stopped = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()


def exit_anyway_after(seconds: float) -> threading.Timer:
    """End the process in `seconds` if it has not ended by then (exit code 1, saying why).

    Python waits for every request thread when it exits, so one thread stuck
    in a model call kept a server alive 17 minutes after SIGTERM (issue #20).
    """

    def force_exit() -> None:
        print(
            f"fmnist serve: stopping took longer than {seconds:.0f} s (a request is still running); "
            "exiting anyway",
            file=sys.stderr,
            flush=True,
        )
        os._exit(EXIT_FAILED)

    timer = threading.Timer(seconds, force_exit)
    timer.daemon = True
    timer.start()
    return timer
