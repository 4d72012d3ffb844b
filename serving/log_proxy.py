"""A request-logging proxy for any TF Serving (`fmnist log-proxy`), gRPC and REST.

The stock `tensorflow/serving` image cannot write request logs (it ships no log
collector; a `logging_config` makes it refuse to start). Put this proxy in
front of it, e.g. as a sidecar in the same pod: clients call the proxy with TF
Serving's own APIs, every call is forwarded (gRPC as it came, with its
metadata; REST turned into the equivalent gRPC call), and Predict and
Classify exchanges are sampled into the `PredictionLog` TFRecords that
`fmnist serve --request-log-dir` writes and `fmnist drift` reads.

Forwarding never depends on logging (a failed write is dropped and counted,
see `serving/request_log.py`). A client's deadline and cancellation travel
upstream: a cancelled call cancels its upstream call at once, so slow
upstream calls nobody waits for do not hold the proxy's threads. After an
upstream outage the channel reconnects within about a second (reconnect
backoff capped at 1 s).
"""

from __future__ import annotations

import threading
import time
from concurrent import futures

import grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

from core.config import ServingConfig
from serving.metrics import ServingMetrics
from serving.request_log import RequestLogger
from serving.rest_server import RestServer
from serving.servable import InvalidRequestError, ServingStatusError
from serving.server import bind, message_size_options, server_options, wait_for_termination

RECONNECT_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
METADATA_CACHE_SECONDS = 10.0


def forward(method, request, context, timeout: float):
    """Call `method` upstream with the client's deadline and metadata; cancel it if the client goes away."""
    remaining = context.time_remaining()
    call = method.future(
        request,
        timeout=min(remaining, timeout) if remaining is not None else timeout,
        metadata=context.invocation_metadata(),
    )
    context.add_callback(call.cancel)  # runs when the client cancels or the call ends
    try:
        return call.result()
    except grpc.FutureCancelledError:
        context.abort(grpc.StatusCode.CANCELLED, "the client cancelled the call")
    except grpc.RpcError as err:
        context.abort(err.code(), err.details() or "upstream TF Serving failed")


class PredictionProxy(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, channel: grpc.Channel, logger: RequestLogger | None, timeout: float):
        self.upstream = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        self.logger = logger
        self.timeout = timeout

    def Predict(self, request, context):
        response = forward(self.upstream.Predict, request, context, self.timeout)
        if self.logger is not None:
            self.logger.log_predict(request, response)
        return response

    def Classify(self, request, context):
        response = forward(self.upstream.Classify, request, context, self.timeout)
        if self.logger is not None:
            self.logger.log_classify(request, response)
        return response

    def Regress(self, request, context):
        return forward(self.upstream.Regress, request, context, self.timeout)

    def MultiInference(self, request, context):
        return forward(self.upstream.MultiInference, request, context, self.timeout)

    def GetModelMetadata(self, request, context):
        return forward(self.upstream.GetModelMetadata, request, context, self.timeout)


class ModelServiceProxy(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, channel: grpc.Channel, timeout: float):
        self.upstream = model_service_pb2_grpc.ModelServiceStub(channel)
        self.timeout = timeout

    def GetModelStatus(self, request, context):
        return forward(self.upstream.GetModelStatus, request, context, self.timeout)

    def HandleReloadConfigRequest(self, request, context):
        return forward(self.upstream.HandleReloadConfigRequest, request, context, self.timeout)


class UpstreamBackend:
    """What the REST front end needs, answered by the upstream TF Serving over gRPC (and logged)."""

    def __init__(self, channel: grpc.Channel, logger: RequestLogger | None, timeout: float):
        self.predictions = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(channel)
        self.logger = logger
        self.timeout = timeout
        self.metrics = ServingMetrics()
        self._signatures: dict[tuple, tuple[float, get_model_metadata_pb2.SignatureDefMap]] = {}
        self._lock = threading.Lock()

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as err:
            raise ServingStatusError(err.details() or "upstream TF Serving failed", err.code().name) from None

    def predict(self, request):
        response = self._call(self.predictions.Predict, request)
        if self.logger is not None:
            self.logger.log_predict(request, response)
        return response

    def classify(self, request):
        response = self._call(self.predictions.Classify, request)
        if self.logger is not None:
            self.logger.log_classify(request, response)
        return response

    def regress(self, request):
        return self._call(self.predictions.Regress, request)

    def metadata(self, request):
        return self._call(self.predictions.GetModelMetadata, request)

    def status(self, model_spec):
        request = get_model_status_pb2.GetModelStatusRequest(model_spec=model_spec)
        return self._call(self.models.GetModelStatus, request)

    def input_dtypes(self, model_spec, signature: str) -> dict[str, int]:
        """The signature's input dtypes, from the upstream's metadata (cached for a few seconds)."""
        key = (model_spec.name, model_spec.version.value, model_spec.version_label)
        with self._lock:
            cached = self._signatures.get(key)
        if cached is None or time.monotonic() - cached[0] > METADATA_CACHE_SECONDS:
            request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
            request.model_spec.CopyFrom(model_spec)
            request.model_spec.ClearField("signature_name")
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            self.metadata(request).metadata["signature_def"].Unpack(signature_map)
            cached = (time.monotonic(), signature_map)
            with self._lock:
                self._signatures[key] = cached
        found = cached[1].signature_def.get(signature)
        if found is None:
            raise InvalidRequestError(f'Serving signature name: "{signature}" not found in signature def')
        return {k: v.dtype for k, v in found.inputs.items()}


def build_proxy(upstream: str, request_log_dir: str, config: ServingConfig, timeout: float = 30.0):
    """A proxy server (not started) forwarding to `upstream`; returns it, its port, its logger and backend."""
    limit = message_size_options(config.max_message_mb)
    channel = grpc.insecure_channel(upstream, options=[*limit, *RECONNECT_OPTIONS])
    logger = RequestLogger(
        request_log_dir,
        config.request_log_sampling,
        max_bytes=config.request_log_max_mb * 2**20,
        max_age_seconds=config.request_log_max_days * 86400,
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.workers), options=server_options(config.max_message_mb)
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionProxy(channel, logger, timeout), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServiceProxy(channel, timeout), server)
    port = bind(server, config.host, config.port)
    backend = UpstreamBackend(channel, logger, timeout)
    backend.metrics.watch_request_log(logger)
    return server, port, logger, backend


def run_proxy(upstream: str, request_log_dir: str, config: ServingConfig) -> None:
    """Proxy until SIGTERM or SIGINT; in-flight requests get up to 10 s, then the log is closed."""
    server, port, logger, backend = build_proxy(upstream, request_log_dir, config)
    rest = RestServer(backend, config) if config.rest_api_port else None
    server.start()
    rest_text = f", REST on {config.host}:{rest.port}" if rest else ""
    print(f"logging proxy: gRPC on {config.host}:{port}{rest_text} -> TF Serving at {upstream}")
    print(f"request logs in {request_log_dir}", flush=True)
    wait_for_termination()
    server.stop(grace=10.0).wait()
    if rest is not None:
        rest.stop()
    logger.close()
    print(logger.summary(), flush=True)
