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

The traffic split, in front of a TF Serving that has none: pointed at the
models.config its TF Serving reads (`--model-config-file`, re-read every
`--poll-seconds`), the proxy sends `--canary-percent` of the Predict,
Classify and Regress requests that name no version to the `canary` label and
the rest to `stable` (`serving/traffic_split.py`), by setting
`model_spec.version_label` on the request it forwards. TF Serving moves a
label only once its version is AVAILABLE (`ServerCore::UpdateModelVersionLabelMap`,
server_core.cc:549-588), so for a while after a push the file can name a
label TF Serving does not know yet: a request the proxy routed that TF Serving
answers "Unrecognized servable version label" is sent again as the client
sent it. Without a models.config, requests go through unchanged.

Metrics, on the REST port with a monitoring config: TF Serving's per-model
ones and the per-version ones of `serving/metrics.py`, for gRPC and REST
calls alike; the version is the one TF Serving answered with
(`model_spec.version` of its response) or, for a refused request, the one it
was sent to when the proxy knows it.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent import futures

import grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

from core.config import ServingConfig
from core.errors import InputError
from serving.calls import CANCELLED, NO_CALL, Call
from serving.log_limit import LogLimit
from serving.metrics import ServingMetrics
from serving.model_config import read_model_config
from serving.request_log import RequestLogger
from serving.rest_server import RestServer
from serving.servable import InvalidRequestError, ServingStatusError
from serving.server import GRPC, bind, grpc_status, message_size_options, server_options, wait_for_termination
from serving.traffic_split import TrafficSplit, client_id_from_metadata, label_of

log = logging.getLogger(__name__)
UNKNOWN_LABEL = "Unrecognized servable version label"  # TF Serving's message (server_core.cc:891)

RECONNECT_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
METADATA_CACHE_SECONDS = 10.0


def upstream_status(err: grpc.RpcError) -> ServingStatusError:
    """The upstream's failure as this server's status error: its code and message, unchanged."""
    return ServingStatusError(err.details() or "upstream TF Serving failed", err.code().name)


def forward(method, request, context, timeout: float):
    """Call `method` upstream with the client's deadline and metadata; cancel it if the client goes away.

    Failures are `ServingStatusError`s with the upstream's status (CANCELLED when the client left).
    """
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
        raise ServingStatusError(CANCELLED, "CANCELLED") from None
    except grpc.RpcError as err:
        raise upstream_status(err) from None


class LabelTable:
    """The version labels of each model in the models.config the upstream TF Serving reads, kept fresh.

    Re-read every `poll_seconds` in a thread, never on a request's path; a file
    that no longer reads keeps the last good labels (logged at most once a
    minute). A bad file at start is bad input (exit code 2), as for `fmnist serve`.
    """

    def __init__(self, path: str, poll_seconds: float):
        self.path = path
        self.poll_seconds = poll_seconds
        self._labels = self._read()
        self._log_limit = LogLimit(log)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="label-poller", daemon=True)

    def _read(self) -> dict[str, dict[str, int]]:
        return {source.name: dict(source.labels) for source in read_model_config(self.path)}

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self._labels = self._read()
                self._log_limit.forget(self.path)
            except InputError as err:
                self._log_limit.log(logging.ERROR, self.path, "%s; the labels read before stay", err)

    def labels(self, name: str) -> dict[str, int]:
        return self._labels.get(name, {})

    def serves(self, name: str) -> bool:
        return name in self._labels

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()


class NoLabels:
    """No models.config: the proxy knows no labels, splits nothing and forwards requests as they are."""

    def labels(self, name: str) -> dict[str, int]:
        return {}

    def serves(self, name: str) -> bool:
        return False

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class Forwarder:
    """One exchange with the upstream: routed by the traffic split, counted per version, logged.

    `send(request)` makes the upstream call and raises `ServingStatusError`.
    """

    def __init__(self, split: TrafficSplit, table, logger: RequestLogger | None, metrics: ServingMetrics):
        self.split = split
        self.table = table
        self.logger = logger
        self.metrics = metrics
        self._answered: set[tuple[str, int]] = set()  # versions TF Serving answered with: served ones only

    def route(self, spec: model_pb2.ModelSpec, client_id: str | None) -> model_pb2.ModelSpec:
        return self.split.route(spec, self.table.labels(spec.name), client_id)

    def exchange(self, api: str, request, send: Callable, client_id: str | None):
        spec = request.model_spec
        routed = self.route(spec, client_id)
        forwarded = request
        if routed is not spec:
            forwarded = type(request)()
            forwarded.CopyFrom(request)
            forwarded.model_spec.CopyFrom(routed)
        started = time.perf_counter()
        try:
            response = self._send(send, forwarded, request)
        except ServingStatusError as err:
            self._count(api, routed, None, err.code, started)
            raise
        self._count(api, routed, response.model_spec.version.value, "OK", started)
        self._log(api, forwarded, response)
        return response

    @staticmethod
    def _send(send: Callable, forwarded, original):
        """`send(forwarded)`; the client's own request again if TF Serving does not know the label yet."""
        try:
            return send(forwarded)
        except ServingStatusError as err:
            if forwarded is original or err.code != "INVALID_ARGUMENT" or UNKNOWN_LABEL not in str(err):
                raise
        return send(original)

    def _count(self, api: str, spec: model_pb2.ModelSpec, version: int | None, status: str, started: float):
        """Per-version metrics: the answering version, else the one the request was sent to.

        A refused request counts for a version only when that version is known to
        be served (labelled in the models.config, or answered before): a client
        naming random version numbers must not create a series each.
        """
        labels = self.table.labels(spec.name)
        if version is not None:
            self._answered.add((spec.name, version))
        else:
            version = spec.version.value if spec.HasField("version") else labels.get(spec.version_label)
            if version not in labels.values() and (spec.name, version) not in self._answered:
                return
        seconds = time.perf_counter() - started
        self.metrics.observe_answer(spec.name, version, label_of(labels, version), api, status, seconds)

    def _log(self, api: str, request, response) -> None:
        if self.logger is None:
            return
        if api == "Predict":
            self.logger.log_predict(request, response)
        elif api == "Classify":
            self.logger.log_classify(request, response)


class PredictionProxy(prediction_service_pb2_grpc.PredictionServiceServicer):
    """TF Serving's PredictionService, answered by the upstream: split, counted and logged on the way."""

    def __init__(self, channel: grpc.Channel, forwarder: Forwarder, timeout: float):
        self.upstream = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        self.forwarder = forwarder
        self.timeout = timeout

    def _exchange(self, api: str, method, request, context):
        client_id = client_id_from_metadata(context.invocation_metadata())
        with (
            self.forwarder.metrics.request(request.model_spec.name, api, GRPC) as outcome,
            grpc_status(context, outcome),
        ):
            send = functools.partial(forward, method, context=context, timeout=self.timeout)
            return self.forwarder.exchange(api, request, send, client_id)

    def _pass(self, method, request, context):
        with grpc_status(context, {}):
            return forward(method, request, context, self.timeout)

    def Predict(self, request, context):
        return self._exchange("Predict", self.upstream.Predict, request, context)

    def Classify(self, request, context):
        return self._exchange("Classify", self.upstream.Classify, request, context)

    def Regress(self, request, context):
        return self._exchange("Regress", self.upstream.Regress, request, context)

    def MultiInference(self, request, context):
        return self._pass(self.upstream.MultiInference, request, context)

    def GetModelMetadata(self, request, context):
        return self._pass(self.upstream.GetModelMetadata, request, context)


class ModelServiceProxy(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, channel: grpc.Channel, timeout: float):
        self.upstream = model_service_pb2_grpc.ModelServiceStub(channel)
        self.timeout = timeout

    def GetModelStatus(self, request, context):
        with grpc_status(context, {}):
            return forward(self.upstream.GetModelStatus, request, context, self.timeout)

    def HandleReloadConfigRequest(self, request, context):
        with grpc_status(context, {}):
            return forward(self.upstream.HandleReloadConfigRequest, request, context, self.timeout)


class UpstreamBackend:
    """What the REST front end needs, answered by the upstream TF Serving over gRPC (split and logged)."""

    def __init__(self, channel: grpc.Channel, forwarder: Forwarder, timeout: float):
        self.predictions = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(channel)
        self.forwarder = forwarder
        self.metrics = forwarder.metrics
        self.timeout = timeout
        self._signatures: dict[tuple, tuple[float, get_model_metadata_pb2.SignatureDefMap]] = {}
        self._lock = threading.Lock()

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as err:
            raise upstream_status(err) from None

    def route(self, model_spec, call: Call = NO_CALL):
        """The spec as it is: the split is applied when forwarding (where a stale label can be retried)."""
        return model_spec

    def _exchange(self, api: str, method, request, call: Call):
        return self.forwarder.exchange(api, request, functools.partial(self._call, method), call.client_id)

    def predict(self, request, call: Call = NO_CALL):
        return self._exchange("Predict", self.predictions.Predict, request, call)

    def classify(self, request, call: Call = NO_CALL):
        return self._exchange("Classify", self.predictions.Classify, request, call)

    def regress(self, request, call: Call = NO_CALL):
        return self._exchange("Regress", self.predictions.Regress, request, call)

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
    """A proxy server (not started) forwarding to `upstream`; returns it, its port, its logger and backend.

    With `config.model_config_file`, the labels in it route the traffic split
    (polled once the backend's `table` is started).
    """
    limit = message_size_options(config.max_message_mb)
    channel = grpc.insecure_channel(upstream, options=[*limit, *RECONNECT_OPTIONS])
    logger = RequestLogger(
        request_log_dir,
        config.request_log_sampling,
        max_bytes=config.request_log_max_mb * 2**20,
        max_age_seconds=config.request_log_max_days * 86400,
    )
    table = (
        LabelTable(config.model_config_file, config.poll_seconds) if config.model_config_file else NoLabels()
    )
    metrics = ServingMetrics(serves=table.serves)
    metrics.watch_request_log(logger)
    forwarder = Forwarder(TrafficSplit(config.canary_percent), table, logger, metrics)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.workers), options=server_options(config.max_message_mb)
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionProxy(channel, forwarder, timeout), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServiceProxy(channel, timeout), server)
    port = bind(server, config.host, config.port)
    return server, port, logger, UpstreamBackend(channel, forwarder, timeout)


def run_proxy(upstream: str, request_log_dir: str, config: ServingConfig) -> None:
    """Proxy until SIGTERM or SIGINT; in-flight requests get up to 10 s, then the log is closed."""
    server, port, logger, backend = build_proxy(upstream, request_log_dir, config)
    rest = RestServer(backend, config) if config.rest_api_port else None
    table = backend.forwarder.table
    table.start()
    server.start()
    rest_text = f", REST on {config.host}:{rest.port}" if rest else ""
    print(f"logging proxy: gRPC on {config.host}:{port}{rest_text} -> TF Serving at {upstream}")
    split = (
        f"{config.canary_percent:g} % of requests naming no version to 'canary', labels from "
        f"{config.model_config_file}"
        if config.model_config_file
        else "no traffic split (no --model-config-file): requests go through as sent"
    )
    print(f"request logs in {request_log_dir}; {split}", flush=True)
    wait_for_termination()
    server.stop(grace=10.0).wait()
    if rest is not None:
        rest.stop()
    table.stop()
    logger.close()
    print(logger.summary(), flush=True)
