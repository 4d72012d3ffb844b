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
takes the server down. The gRPC port is bound without SO_REUSEPORT (TF Serving
issue #1288: with it, a second server on the same port starts and the kernel
splits clients between the two), so a busy port is refused at start.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from core.config import ServingConfig
from core.errors import InputError
from serving.rest_server import RestServer
from serving.runtime import ServingRuntime
from serving.servable import ServingStatusError
from serving.version_manager import VersionManager

log = logging.getLogger(__name__)
GRPC = "GRPC"


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

    def _answer(self, api: str, model_name: str, call, request, context):
        with self.runtime.metrics.request(model_name, api, GRPC) as outcome, grpc_status(context, outcome):
            return call(request)

    def Predict(self, request, context):
        return self._answer("Predict", request.model_spec.name, self.runtime.predict, request, context)

    def Classify(self, request, context):
        return self._answer("Classify", request.model_spec.name, self.runtime.classify, request, context)

    def Regress(self, request, context):
        return self._answer("Regress", request.model_spec.name, self.runtime.regress, request, context)

    def MultiInference(self, request, context):
        name = request.tasks[0].model_spec.name if request.tasks else ""
        return self._answer("MultiInference", name, self.runtime.multi_inference, request, context)

    def GetModelMetadata(self, request, context):
        return self._answer(
            "GetModelMetadata", request.model_spec.name, self.runtime.metadata, request, context
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
        self.grpc_server.stop(grace=grace_seconds).wait()
        if self.rest is not None:
            self.rest.stop()
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
    """Serve gRPC (and REST, metrics) until SIGTERM or SIGINT; in-flight requests get 10 s."""
    running = start(config)
    where = f"gRPC on {config.host}:{running.port}"
    if running.rest is not None:
        where += f", REST on {config.host}:{running.rest_port}"
    models = running.manager.model_names() or "no models yet"
    print(f"serving {models} from {running.manager.where}; {where}", flush=True)
    wait_for_termination()
    running.stop(grace_seconds=10.0)
    if running.runtime.logger is not None:
        print(running.runtime.logger.summary(), flush=True)


def wait_for_termination() -> None:
    """Block until SIGTERM or SIGINT."""
    stopped = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()
