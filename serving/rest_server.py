"""TF Serving's REST API (port 8501 by default, loopback unless `--host` says otherwise), on tornado.

Paths and methods as TF Serving's `http_rest_api_util.cc` parses them:

    GET  /v1/models/{name}[/versions/{v}|/labels/{l}]            -> GetModelStatus as JSON
    GET  /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata   -> GetModelMetadata as JSON
    POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict    (and :classify, :regress)
    GET  /monitoring/prometheus/metrics                          (with a monitoring config)

Bodies and answers are TF Serving's JSON (`serving/rest_json.py`); every call
goes to a backend with the gRPC API's calls: this server's `ServingRuntime`
(the same code as its gRPC front end), or for `fmnist log-proxy` the upstream
TF Serving. Errors are `{"error": "..."}`
with the HTTP status TF Serving's `http_server.cc` maps each status code to
(INVALID_ARGUMENT and FAILED_PRECONDITION 400, NOT_FOUND 404, UNAVAILABLE 503,
RESOURCE_EXHAUSTED 429, UNIMPLEMENTED 501, others 500). The model call runs
on a thread pool, so the event loop keeps answering.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import urllib.parse
from concurrent import futures

import tornado.httpserver
import tornado.netutil
import tornado.web
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    model_pb2,
    predict_pb2,
    regression_pb2,
)

from core.config import ServingConfig
from core.errors import InputError
from core.vocabulary import SERVING_SIGNATURE
from serving import rest_json
from serving.metrics import DEFAULT_PATH
from serving.protos import MonitoringConfig, read_text_proto
from serving.servable import ServingStatusError

REST = "REST"
_VERSION = r"(?:(?:/versions/(-?\d+))|(?:/labels/([^/:]+)))?"
PREDICTION_PATH = re.compile(r"/v1/models/([^/:]+)" + _VERSION + r":(classify|regress|predict)", re.I)
STATUS_PATH = re.compile(r"/v1/models(?:/([^/:]+))?" + _VERSION + r"(?:/(metadata))?", re.I)
HTTP_STATUS = {
    "OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400, "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400, "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501, "INTERNAL": 500,
    "UNAVAILABLE": 503, "DATA_LOSS": 500, "UNAUTHENTICATED": 401,
}  # fmt: skip


def prometheus_path(config: ServingConfig) -> str | None:
    """The metrics path a monitoring config enables (TF Serving's `--monitoring_config_file`), or None."""
    if not config.monitoring_config_file:
        return None
    monitoring = read_text_proto(config.monitoring_config_file, MonitoringConfig, "--monitoring-config-file")
    if not monitoring.prometheus_config.enable:
        return None
    return monitoring.prometheus_config.path or DEFAULT_PATH


def model_spec(name: str, version: str | None, label: str | None) -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=urllib.parse.unquote(name))
    if version is not None:
        spec.version.value = int(version)
    if label is not None:
        spec.version_label = urllib.parse.unquote(label)
    return spec


class ApiHandler(tornado.web.RequestHandler):
    """Every `/v1/...` request: parsed as TF Serving parses it, answered off the event loop."""

    def initialize(self, runtime, pool: futures.ThreadPoolExecutor) -> None:
        self.runtime = runtime
        self.pool = pool

    async def get(self, path: str) -> None:
        match = STATUS_PATH.fullmatch("/" + path)
        if match is None or not match.group(1):
            return self._reply(404 if match is None else 400, {"error": f"Malformed request: GET /{path}"})
        name, version, label, metadata = match.groups()
        api = "GetModelMetadata" if metadata else "GetModelStatus"
        await self._answer(
            api, name, lambda: self._status_or_metadata(model_spec(name, version, label), metadata)
        )

    async def post(self, path: str) -> None:
        match = PREDICTION_PATH.fullmatch("/" + path)
        if match is None:
            return self._reply(404, {"error": f"Malformed request: POST /{path}"})
        name, version, label, method = match.groups()
        spec = model_spec(name, version, label)
        body = self.request.body
        handler = {"predict": self._predict, "classify": self._classify, "regress": self._regress}[
            method.lower()
        ]
        await self._answer(method.capitalize(), name, lambda: handler(spec, body))

    async def _answer(self, api: str, name: str, work) -> None:
        with self.runtime.metrics.request(urllib.parse.unquote(name), api, REST) as outcome:
            try:
                answer = await asyncio.get_running_loop().run_in_executor(self.pool, work)
            except ServingStatusError as err:
                outcome["status"] = err.code
                return self._reply(HTTP_STATUS.get(err.code, 500), {"error": str(err)})
            self._reply(200, answer)

    def _reply(self, status: int, document: dict) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(document))

    # --- the work, on the pool ----------------------------------------------------------------------
    def _status_or_metadata(self, spec: model_pb2.ModelSpec, metadata: str | None) -> dict:
        if not metadata:
            return rest_json.proto_json(self.runtime.status(spec))
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=spec, metadata_field=["signature_def"]
        )
        response = self.runtime.metadata(request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return {
            "model_spec": rest_json.proto_json(response.model_spec),
            "metadata": {"signature_def": rest_json.proto_json(signature_map)},
        }

    def _predict(self, spec: model_pb2.ModelSpec, body: bytes) -> dict:
        document = rest_json.parse_body(body)
        spec.signature_name = str(document.get("signature_name") or "")
        dtypes = self.runtime.input_dtypes(spec, spec.signature_name or SERVING_SIGNATURE)
        inputs, row_format = rest_json.predict_inputs(document, dtypes)
        request = predict_pb2.PredictRequest(model_spec=spec)
        for key, proto in inputs.items():
            request.inputs[key].CopyFrom(proto)
        response = self.runtime.predict(request)
        outputs = {k: rest_json.array_of(v) for k, v in response.outputs.items()}
        return rest_json.predict_response(outputs, row_format)

    def _classify(self, spec: model_pb2.ModelSpec, body: bytes) -> dict:
        document = rest_json.parse_body(body)
        spec.signature_name = str(document.get("signature_name") or "")
        request = classification_pb2.ClassificationRequest(
            model_spec=spec, input=rest_json.examples_input(document)
        )
        return rest_json.classify_response(self.runtime.classify(request).result)

    def _regress(self, spec: model_pb2.ModelSpec, body: bytes) -> dict:
        document = rest_json.parse_body(body)
        spec.signature_name = str(document.get("signature_name") or "")
        request = regression_pb2.RegressionRequest(model_spec=spec, input=rest_json.examples_input(document))
        return rest_json.regress_response(self.runtime.regress(request).result)


class MetricsHandler(tornado.web.RequestHandler):
    def initialize(self, runtime) -> None:
        self.runtime = runtime

    def get(self) -> None:
        self.set_header("Content-Type", "text/plain; version=0.0.4")
        self.finish(self.runtime.metrics.page())


class RestServer:
    """TF Serving's REST API for a runtime, on its own event-loop thread; `port` is the bound port."""

    def __init__(self, runtime, config: ServingConfig, port: int | None = None):
        # Tornado logs every 4xx answer as a warning; a client sending bad requests must not flood
        # the server's log (TF Serving logs none). Server errors (5xx) are still logged.
        logging.getLogger("tornado.access").setLevel(logging.ERROR)
        port = config.rest_api_port if port is None else port
        try:
            sockets = tornado.netutil.bind_sockets(port, config.host, reuse_port=False)
        except OSError as err:
            raise InputError(
                f"--rest-api-port {port}: cannot listen on {config.host}: {err.strerror or err}"
            ) from None
        self.port = sockets[0].getsockname()[1]
        self.pool = futures.ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="rest")
        routes = [(r"/(v1/.*)", ApiHandler, {"runtime": runtime, "pool": self.pool})]
        metrics_path = prometheus_path(config)
        if metrics_path:
            routes.insert(0, (re.escape(metrics_path), MetricsHandler, {"runtime": runtime}))
        self._started = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, args=(routes, sockets, config), daemon=True, name="rest"
        )
        self._thread.start()
        self._started.wait()

    def _serve(self, routes, sockets, config: ServingConfig) -> None:
        asyncio.set_event_loop(asyncio.new_event_loop())
        self._loop = asyncio.get_event_loop()
        app = tornado.web.Application(routes, default_handler_class=NotFound)
        self._server = tornado.httpserver.HTTPServer(app, max_body_size=config.max_message_mb * 2**20)
        self._server.add_sockets(sockets)
        self._started.set()
        self._loop.run_forever()

    def stop(self, grace_seconds: float = 10.0) -> None:
        def shutdown() -> None:
            self._server.stop()
            self._loop.stop()

        self._loop.call_soon_threadsafe(shutdown)
        self._thread.join(timeout=10)
        self.pool.shutdown(wait=False)


class NotFound(tornado.web.RequestHandler):
    def prepare(self) -> None:
        self.set_status(404)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": f"Malformed request: {self.request.method} {self.request.path}"}))
