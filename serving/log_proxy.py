"""A request-logging gRPC proxy for any TF Serving (`fmnist log-proxy`).

The stock `tensorflow/serving` image cannot write request logs (it ships no log
collector; a `logging_config` makes it refuse to start). Put this proxy in
front of it, e.g. as a sidecar in the same pod: clients call the proxy with TF
Serving's own API, every RPC is forwarded unchanged (deadline and metadata
included; errors come back with TF Serving's status and message), and Predict
exchanges are sampled into the same `PredictionLog` TFRecords `fmnist serve
--request-log-dir` writes, which `fmnist drift` reads.
"""

from __future__ import annotations

from concurrent import futures

import grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from serving.request_log import RequestLogger
from serving.server import message_size_options, run_until_terminated


class _Forwarder:
    def __init__(self, timeout: float):
        self.timeout = timeout

    def forward(self, method, request, context):
        remaining = context.time_remaining()
        try:
            return method(
                request,
                timeout=min(remaining, self.timeout) if remaining else self.timeout,
                metadata=context.invocation_metadata(),
            )
        except grpc.RpcError as err:
            context.abort(err.code(), err.details() or "upstream TF Serving failed")


class PredictionProxy(prediction_service_pb2_grpc.PredictionServiceServicer, _Forwarder):
    def __init__(self, channel: grpc.Channel, logger: RequestLogger | None, timeout: float):
        _Forwarder.__init__(self, timeout)
        self.upstream = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        self.logger = logger

    def Predict(self, request, context):
        response = self.forward(self.upstream.Predict, request, context)
        if self.logger is not None:
            self.logger.log_predict(request, response)
        return response

    def Classify(self, request, context):
        response = self.forward(self.upstream.Classify, request, context)
        if self.logger is not None:
            self.logger.log_classify(request, response)
        return response

    def Regress(self, request, context):
        return self.forward(self.upstream.Regress, request, context)

    def MultiInference(self, request, context):
        return self.forward(self.upstream.MultiInference, request, context)

    def GetModelMetadata(self, request, context):
        return self.forward(self.upstream.GetModelMetadata, request, context)


class ModelServiceProxy(model_service_pb2_grpc.ModelServiceServicer, _Forwarder):
    def __init__(self, channel: grpc.Channel, timeout: float):
        _Forwarder.__init__(self, timeout)
        self.upstream = model_service_pb2_grpc.ModelServiceStub(channel)

    def GetModelStatus(self, request, context):
        return self.forward(self.upstream.GetModelStatus, request, context)

    def HandleReloadConfigRequest(self, request, context):
        return self.forward(self.upstream.HandleReloadConfigRequest, request, context)


def build_proxy(
    upstream: str,
    request_log_dir: str,
    host: str = "127.0.0.1",
    port: int = 8600,
    sampling: float = 1.0,
    timeout: float = 30.0,
    workers: int = 8,
    max_message_mb: int = 64,
) -> tuple[grpc.Server, int, RequestLogger]:
    """A proxy server (not yet started) forwarding to `upstream`; returns it, its port and its logger."""
    limit = message_size_options(max_message_mb)
    channel = grpc.insecure_channel(upstream, options=limit)
    logger = RequestLogger(request_log_dir, sampling)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=limit)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionProxy(channel, logger, timeout), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServiceProxy(channel, timeout), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind {host}:{port} (in use?)")
    return server, bound, logger


def run_proxy(upstream: str, request_log_dir: str, host: str, port: int, sampling: float) -> None:
    """Proxy until SIGTERM or SIGINT; in-flight requests get up to 10 s, then the log is closed."""
    server, bound, logger = build_proxy(upstream, request_log_dir, host, port, sampling)
    server.start()
    print(f"logging proxy on {host}:{bound} -> TF Serving at {upstream}; logs in {request_log_dir}")
    run_until_terminated(server)
    logger.close()
