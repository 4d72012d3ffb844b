"""TF Serving's REST API (port 8501 by default, loopback unless `--host` says otherwise), on tornado.

Requests are routed as TF Serving routes them (tensorflow/serving at 9d981c5c27):

- A path matching `(?i)/v1/.*` goes to the API (`http_server.cc`,
  `RestApiRequestDispatcher::Dispatch`); any other path is 404 (libevent's
  answer when no handler takes it), the Prometheus path aside.
- In the API the raw path, still percent-encoded and with its query, must
  match `kPredictionApiGegex` for POST or `kModelStatusApiRegex` for GET
  (`http_rest_api_util.cc`, `ParseModelInfo`); versions are ASCII digits
  within int64. Anything else, and any other method, is 400
  "Malformed request: METHOD PATH" (`http_rest_api_handler.cc`,
  `ProcessRequest`); the model name and label are then percent-decoded:

      GET  /v1/models/{name}[/versions/{v}|/labels/{l}]            -> GetModelStatus as JSON
      GET  /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata   -> GetModelMetadata as JSON
      POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict    (and :classify, :regress)
      GET  /monitoring/prometheus/metrics                          (with a monitoring config)

- OPTIONS is a CORS preflight: 200 with an `Origin` header, else 400
  (`http_server.cc`, `ProcessRequest`); CORS headers are sent only when
  enabled (TF Serving's `--rest_api_enable_cors_support`). TRACE and CONNECT
  are 501 (not in `evhttp_server.cc`'s allowed methods).
- A `Content-Encoding: gzip` body is decompressed (`evhttp_request.cc`,
  `NeedUncompressGzipContent`).

Bodies and answers are TF Serving's JSON (`serving/rest_json.py`); every call
goes to a backend with the gRPC API's calls: this server's `ServingRuntime`
or, for `fmnist log-proxy`, the upstream TF Serving. The header `X-Client-Id`
keeps a client on one version of a traffic split (`serving/traffic_split.py`);
a request naming no version is routed once, before its JSON is read with the
input dtypes of the version that will answer it. Errors are
`{"error": "..."}` with the HTTP status `http_server.cc`'s `ToHTTPStatusCode`
gives the status code, and one log line each at most, rate-limited.

Limits (TF Serving has none; a server must survive any client): a body over
`--max-message-mb` is refused by its `Content-Length` before it is read (413,
its remaining bytes read and dropped); a body whose JSON would cost more
memory to parse than `parse_budget` (twice that limit) is refused before it
is parsed; bodies held and bodies being parsed at once are bounded, so a few
large requests wait for each other instead of taking the memory. Parsing and
model calls run on a thread pool, never on the event loop. `stop` drains:
no new connections, in-flight requests get a grace period, then all close.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import logging
import re
import threading
import time
import urllib.parse
import zlib
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
from serving.calls import Call
from serving.metrics import DEFAULT_PATH
from serving.protos import MonitoringConfig, read_text_proto
from serving.rest_json import BodyTooLargeError
from serving.servable import InvalidRequestError, ServingStatusError
from serving.traffic_split import CLIENT_ID_KEY

log = logging.getLogger(__name__)
REST = "REST"
# http_rest_api_util.cc's kPredictionApiGegex and kModelStatusApiRegex, on the raw path's bytes: RE2's
# `\d` is ASCII, and the path is matched before percent-decoding.
_VERSION = rb"(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?"
PREDICTION_PATH = re.compile(rb"(?i)/v1/models/([^/:]+)" + _VERSION + rb":(classify|regress|predict)")
STATUS_PATH = re.compile(rb"(?i)/v1/models(?:/([^/:]+))?" + _VERSION + rb"(?:/(metadata))?")
API_PATH = r"(?i)/v1/.*"  # http_rest_api_util.h's kHTTPRestApiHandlerPathRegex
PREDICTION_APIS = {b"predict": "Predict", b"classify": "Classify", b"regress": "Regress"}
# http_server.cc ToHTTPStatusCode: the HTTP status of each status code.
HTTP_STATUS = {
    "OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400, "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400, "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501, "INTERNAL": 500,
    "UNAVAILABLE": 503, "DATA_LOSS": 500, "UNAUTHENTICATED": 401,
}  # fmt: skip
TOO_LARGE = 413  # libevent's answer to a body over evhttp_set_max_body_size (TF Serving sets none)
# http_rest_api_util.cc's AddCORSHeaders.
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, GET",
    "Access-Control-Allow-Headers": "Content-Type",
}
DRAIN_FACTOR = 4  # a refused body up to this many times the limit is read and dropped, so the client
# reads the answer; a larger one gets the answer and the connection closed
CLOSE_SECONDS = 2.0  # after the grace period, how long closing the connections may take


def prometheus_path(config: ServingConfig) -> str | None:
    """The metrics path a monitoring config enables (TF Serving's `--monitoring_config_file`), or None."""
    if not config.monitoring_config_file:
        return None
    monitoring = read_text_proto(config.monitoring_config_file, MonitoringConfig, "--monitoring-config-file")
    if not monitoring.prometheus_config.enable:
        return None
    return monitoring.prometheus_config.path or DEFAULT_PATH


# --- routing ------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Route:
    """What a request path asks for: the API (as the metrics name it) and the model spec."""

    api: str
    spec: model_pb2.ModelSpec


def _decoded(raw: bytes) -> str:
    """`DecodeArg`: percent-decoded as curl does (invalid escapes kept); bytes not UTF-8 kept visible."""
    return urllib.parse.unquote_to_bytes(raw).decode("utf-8", "backslashreplace")


def model_spec(name: bytes | None, version: bytes | None, label: bytes | None) -> model_pb2.ModelSpec:
    """`ParseModelInfo` + `FillModelSpecWithNameVersionAndLabel`: the version must fit int64."""
    spec = model_pb2.ModelSpec(name=_decoded(name) if name else "")
    if version:
        if int(version) > rest_json.INT64_MAX:
            raise InvalidRequestError(f"Failed to convert version: {version.decode()} to numeric.")
        spec.version.value = int(version)
    if label:
        spec.version_label = _decoded(label)
    return spec


def route(method: str, path: bytes) -> Route:
    """The API call for `METHOD path` as `HttpRestApiHandler::ProcessRequest` dispatches it.

    `path` is the raw request target (percent-encoded, with the query). The
    verb after ':' is compared case-sensitively and "metadata" too (a GET of
    `/METADATA` is a status request), as TF Serving compares them.
    """
    match = None
    if method == "POST":
        match = PREDICTION_PATH.fullmatch(path)
    elif method == "GET":
        match = STATUS_PATH.fullmatch(path)
    malformed = InvalidRequestError(f"Malformed request: {method} {path.decode('latin-1')}")
    if match is None:
        raise malformed
    name, version, label, verb = match.groups()
    spec = model_spec(name, version, label)
    if method == "POST":
        if verb not in PREDICTION_APIS:
            raise malformed
        return Route(PREDICTION_APIS[verb], spec)
    if not spec.name:
        raise InvalidRequestError("Missing model name in request.")
    return Route("GetModelMetadata" if verb == b"metadata" else "GetModelStatus", spec)


# --- bounds on memory ---------------------------------------------------------------------------------
class Budget:
    """An asyncio semaphore by weight: holders' weights sum to at most `capacity` (a heavier one runs alone).

    Waiters are served in arrival order, so a large request is not starved by
    a stream of small ones.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.used = 0
        self._waiters: collections.deque = collections.deque()

    def _fits(self, weight: int) -> bool:
        return self.used == 0 or self.used + weight <= self.capacity

    async def acquire(self, weight: int) -> None:
        if not self._waiters and self._fits(weight):
            self.used += weight
            return
        granted = asyncio.get_running_loop().create_future()
        self._waiters.append((weight, granted))
        await granted  # a waiter is never cancelled: tornado does not cancel a handler's coroutine

    def release(self, weight: int) -> None:
        self.used -= weight
        while self._waiters and self._fits(self._waiters[0][0]):
            weight, granted = self._waiters.popleft()
            self.used += weight
            granted.set_result(None)

    @contextlib.asynccontextmanager
    async def hold(self, weight: int):
        await self.acquire(weight)
        try:
            yield
        finally:
            self.release(weight)


class RateLimitedLog:
    """At most `burst` lines per `period` seconds; the lines dropped are counted in the next one.

    A client sending bad requests in a loop must not fill the disk or slow the
    server with log writes; the first lines of a burst say what is happening.
    """

    def __init__(self, logger: logging.Logger, burst: int = 10, period: float = 10.0):
        self.logger, self.burst, self.period = logger, burst, period
        self._lock = threading.Lock()
        self._window_start, self._sent, self._dropped = 0.0, 0, 0

    def __call__(self, level: int, message: str, exc_info=None) -> None:
        if not self.logger.isEnabledFor(level):
            return
        with self._lock:
            now = time.monotonic()
            if now - self._window_start >= self.period:
                self._window_start, self._sent = now, 0
            if self._sent >= self.burst:
                self._dropped += 1
                return
            self._sent += 1
            dropped, self._dropped = self._dropped, 0
        if dropped:
            message += f" ({dropped} more lines like these were dropped before this one)"
        self.logger.log(level, "%s", message, exc_info=exc_info)


def declared_length(request) -> int | None:
    """The request's `Content-Length`, or None: a chunked body, or a bad length (tornado refuses it later)."""
    try:
        size = int(request.headers.get("Content-Length", ""))
    except ValueError:
        return None
    return size if size >= 0 else None


def gunzip(body: bytes, limit: int) -> bytes:
    """The decompressed body, never more than `limit` bytes of it (a small body may inflate to gigabytes)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        plain = inflater.decompress(body, limit + 1)
    except zlib.error as err:  # TF Serving then parses an empty body: "The document is empty"
        raise InvalidRequestError(f"JSON Parse error: The document is empty (gzip body: {err})") from None
    if len(plain) > limit:
        raise BodyTooLargeError(
            f"the gzip body inflates to more than {limit} bytes; the limit is {limit} bytes"
        )
    if not inflater.eof:
        raise InvalidRequestError("JSON Parse error: The document is empty (gzip body: truncated)")
    return plain


# --- handlers -----------------------------------------------------------------------------------------
@tornado.web.stream_request_body
class RestHandler(tornado.web.RequestHandler):
    """What every request gets: body limits, in-flight tracking for `stop`, JSON errors, quiet logs."""

    SUPPORTED_METHODS = ("GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT")

    def initialize(self, rest: RestServer) -> None:
        self.rest = rest
        self._body = bytearray()
        self._held = 0  # bytes reserved in rest.bodies
        self._refused = False
        self._gone = False

    async def prepare(self) -> None:
        self.rest.in_flight.add(self)
        if self.request.method in ("TRACE", "CONNECT"):
            return self.reply(501, f"Method {self.request.method} is not allowed")
        if self.rest.draining:
            return self.reply(503, "the server is shutting down")
        size = declared_length(self.request)
        if size is not None and size > self.rest.max_body:
            return self._refuse_body(f"the request body is {size} bytes", size)
        # A chunked body is measured as it comes (data_received); tornado's own limit must not cut it first.
        self.request.connection.set_max_body_size(DRAIN_FACTOR * self.rest.max_body if size is None else size)
        weight = self.rest.max_body if size is None else size
        await self.rest.bodies.acquire(weight)
        self._held = weight
        if self._gone:  # the client left while this request waited for memory
            self._release()

    def data_received(self, chunk: bytes) -> None:
        if self._refused:
            return
        self._body += chunk
        if len(self._body) > self.rest.max_body:  # a chunked body, which declared no length
            self._refuse_body(f"the chunked request body exceeds {self.rest.max_body} bytes", None)

    def _refuse_body(self, what: str, size: int | None) -> None:
        """413 at once; the rest of the body is read and dropped (up to a bound) so the client sees it."""
        self._refused = True
        self._body = bytearray()
        message = f"{what}; the limit is {self.rest.max_body} bytes (--max-message-mb)"
        self.reply(TOO_LARGE, message, finish=False)
        drain = DRAIN_FACTOR * self.rest.max_body
        if self.request.headers.get("Expect", "").lower() == "100-continue" or (size or 0) > drain:
            self.finish()  # the client has not sent the body yet, or it is too large to read: close
            return
        self.flush()
        self.request.connection.set_max_body_size(size if size is not None else drain)

    def reply(self, status: int, document: dict | str, finish: bool = True) -> None:
        """Answer `document` (a message is an error: `{"error": message}`) as JSON; log an error once."""
        if isinstance(document, str):
            level = logging.WARNING if status == TOO_LARGE or status >= 500 else logging.INFO
            self.rest.log(level, f"REST {self.request.method} {self.request.uri[:200]}: {status} {document}")
            document = {"error": document}
        text = json.dumps(document).encode()
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Content-Length", str(len(text)))
        self.write(text)
        if finish:
            self.finish()

    def write_error(self, status_code: int, **kwargs) -> None:
        """Tornado's own errors (and an unexpected exception, 500) as JSON, not its HTML page."""
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, tornado.web.HTTPError):
            message = error.log_message or self._reason
        else:
            message = f"Internal error: {type(error).__name__}: {error}" if error else f"HTTP {status_code}"
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": message[:500]}))

    def log_exception(self, typ, value, tb) -> None:
        """One line per request, rate-limited; a traceback only for what is a bug here (not an HTTPError)."""
        if isinstance(value, tornado.web.HTTPError):
            self.rest.log(logging.INFO, f"REST {self.request.method} {self.request.uri[:200]}: {value}")
        else:
            self.rest.log(
                logging.ERROR, f"REST {self.request.method} {self.request.uri[:200]} failed", (typ, value, tb)
            )

    def _take_body(self) -> bytearray:
        """The body, handed over (not copied): the call can drop it once parsed."""
        body, self._body = self._body, bytearray()
        return body

    def _release(self) -> None:
        self.rest.bodies.release(self._held)
        self._held = 0

    def on_finish(self) -> None:
        self._release()
        self.rest.in_flight.discard(self)

    def on_connection_close(self) -> None:
        self._gone = True
        if self._held:
            self._release()
        self.rest.in_flight.discard(self)

    async def get(self) -> None:
        if not self._refused:
            await self.answer()

    post = put = delete = patch = head = options = get

    async def answer(self) -> None:
        raise NotImplementedError


class ApiHandler(RestHandler):
    """Every `/v1/...` request: routed as TF Serving routes it, answered off the event loop."""

    def initialize(self, rest: RestServer) -> None:
        super().initialize(rest)
        self.set_default_headers()  # tornado's first call came before `rest` was set

    def set_default_headers(self) -> None:
        """CORS headers, when enabled, on every /v1 answer, errors and preflights too (http_server.cc:183)."""
        if getattr(self, "rest", None) is not None and self.rest.cors:
            for header, value in CORS_HEADERS.items():
                self.set_header(header, value)

    async def answer(self) -> None:
        if self.request.method == "OPTIONS":
            return self._preflight()
        try:
            call = route(self.request.method, self.request.uri.encode("latin-1"))
        except ServingStatusError as err:
            return self.reply_status(err)
        encoding = self.request.headers.get("Content-Encoding", "")
        caller = Call(client_id=self.request.headers.get(CLIENT_ID_KEY))
        with self.rest.runtime.metrics.request(call.spec.name, call.api, REST) as outcome:
            try:
                answer = await self.rest.call(call, self._take_body(), encoding, caller)
            except ServingStatusError as err:
                outcome["status"] = err.code
                return self.reply_status(err)
            except Exception:
                outcome["status"] = "INTERNAL"
                raise
        self.reply(200, answer)

    def _preflight(self) -> None:
        """A CORS preflight: 200 with an empty body when `Origin` names an http(s) origin, else 400."""
        if re.search(r"https?://", self.request.headers.get("Origin", "")):
            self.set_status(200)
            self.clear_header("Content-Type")
            return self.finish()
        self.reply(400, "Origin header is missing in CORS preflight")

    def reply_status(self, err: ServingStatusError) -> None:
        status = TOO_LARGE if isinstance(err, BodyTooLargeError) else HTTP_STATUS.get(err.code, 500)
        self.reply(status, str(err))


class MetricsHandler(RestHandler):
    async def answer(self) -> None:
        """The Prometheus page, built off the event loop (a scrape may recompute accuracy estimates)."""
        page = await asyncio.get_running_loop().run_in_executor(
            self.rest.pool, self.rest.runtime.metrics.page
        )
        self.set_header("Content-Type", "text/plain; version=0.0.4")
        self.finish(page)


class NotFound(RestHandler):
    """A path outside `/v1/`: 404, as libevent answers when no dispatcher takes the request."""

    async def answer(self) -> None:
        self.reply(404, f"Malformed request: {self.request.method} {self.request.path}")


# --- the server ---------------------------------------------------------------------------------------
class RestServer:
    """TF Serving's REST API for a runtime, on its own event-loop thread; `port` is the bound port."""

    def __init__(self, runtime, config: ServingConfig, port: int | None = None):
        port = config.rest_api_port if port is None else port
        try:
            sockets = tornado.netutil.bind_sockets(port, config.host, reuse_port=False)
        except OSError as err:
            raise InputError(
                f"--rest-api-port {port}: cannot listen on {config.host}: {err.strerror or err}"
            ) from None
        self.port = sockets[0].getsockname()[1]
        self.runtime = runtime
        self.cors = config.rest_api_enable_cors_support
        self.max_body = config.max_message_mb * 2**20
        self.parse_budget = 2 * self.max_body
        self.pool = futures.ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="rest")
        self.log = RateLimitedLog(log)
        self.bodies = Budget(2 * self.max_body)  # bytes of request bodies held at once
        self.parses = Budget(self.parse_budget)  # estimated bytes of JSON being parsed at once
        self.in_flight: set[RestHandler] = set()
        self.draining = False
        self._stopped = False
        routes = [(API_PATH, ApiHandler, {"rest": self})]
        metrics_path = prometheus_path(config)
        if metrics_path:
            routes.insert(0, (re.escape(metrics_path), MetricsHandler, {"rest": self}))
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(routes, sockets), daemon=True, name="rest")
        self._thread.start()
        self._started.wait()

    def _serve(self, routes, sockets) -> None:
        asyncio.set_event_loop(asyncio.new_event_loop())
        self._loop = asyncio.get_event_loop()
        app = tornado.web.Application(
            routes,
            default_handler_class=NotFound,
            default_handler_args={"rest": self},
            log_function=lambda handler: None,  # errors are logged once each, rate-limited, by RestHandler
        )
        self._server = tornado.httpserver.HTTPServer(app, max_body_size=DRAIN_FACTOR * self.max_body)
        self._server.add_sockets(sockets)
        self._started.set()
        self._loop.run_forever()

    # --- a call, off the event loop ----------------------------------------------------------------
    async def call(self, call: Route, body: bytes, encoding: str, caller: Call) -> dict:
        """The JSON answer to `call`: body checked, then parsed within the budget, then the model call."""
        loop = asyncio.get_running_loop()
        if call.api in ("GetModelStatus", "GetModelMetadata"):
            return await loop.run_in_executor(self.pool, self._status_or_metadata, call)
        body, cost = await loop.run_in_executor(self.pool, self._measure, body, encoding)
        async with self.parses.hold(cost):
            request = await loop.run_in_executor(self.pool, self._build, call, body, caller)
        del body  # the only reference left: the model call does not hold the text
        return await loop.run_in_executor(self.pool, self._run, call.api, request, caller)

    def _measure(self, body: bytes, encoding: str) -> tuple[bytes, int]:
        """The (decompressed) body and what parsing it would cost; refused when over the budget."""
        if "gzip" in encoding:
            body = gunzip(body, self.max_body)
        cost = rest_json.parse_cost(body)
        if cost > self.parse_budget:
            values = rest_json.values_bound(body)
            raise BodyTooLargeError(
                f"the request body ({len(body)} bytes) holds up to {values} JSON values, about "
                f"{cost >> 20} MB to parse; the limit is {self.parse_budget >> 20} MB (--max-message-mb)"
            )
        return body, cost

    def _build(self, call: Route, body: bytes, caller: Call):
        """The API's request proto from the JSON body (and for Predict, whether rows were sent)."""
        document = rest_json.parse_body(body)
        spec = self.runtime.route(call.spec, caller)
        spec.signature_name = rest_json.signature_name(document)
        if call.api == "Predict":
            dtypes = self.runtime.input_dtypes(spec, spec.signature_name or SERVING_SIGNATURE)
            inputs, row_format = rest_json.predict_inputs(document, dtypes)
            request = predict_pb2.PredictRequest(model_spec=spec)
            for key, proto in inputs.items():
                request.inputs[key].CopyFrom(proto)
            return request, row_format
        kind = (
            classification_pb2.ClassificationRequest
            if call.api == "Classify"
            else regression_pb2.RegressionRequest
        )
        return kind(model_spec=spec, input=rest_json.examples_input(document)), None

    def _run(self, api: str, built, caller: Call) -> dict:
        """The model call through the backend, and its answer as TF Serving's JSON."""
        request, row_format = built
        if api == "Predict":
            response = self.runtime.predict(request, caller)
            outputs = {k: rest_json.array_of(v) for k, v in response.outputs.items()}
            return rest_json.predict_response(outputs, row_format)
        if api == "Classify":
            return rest_json.classify_response(self.runtime.classify(request, caller).result)
        return rest_json.regress_response(self.runtime.regress(request, caller).result)

    def _status_or_metadata(self, call: Route) -> dict:
        if call.api == "GetModelStatus":
            return rest_json.proto_json(self.runtime.status(call.spec))
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=call.spec, metadata_field=["signature_def"]
        )
        response = self.runtime.metadata(request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return {
            "model_spec": rest_json.proto_json(response.model_spec),
            "metadata": {"signature_def": rest_json.proto_json(signature_map)},
        }

    # --- shutdown ----------------------------------------------------------------------------------
    def stop(self, grace_seconds: float = 10.0) -> None:
        """Stop accepting, let in-flight requests finish within `grace_seconds`, then close everything.

        Requests arriving meanwhile on open connections get 503 (UNAVAILABLE).
        `None` means no grace, as for a gRPC server. Calling it again does nothing.
        """
        if self._stopped:
            return
        self._stopped = True
        grace = max(0.0, grace_seconds or 0.0)
        drained = asyncio.run_coroutine_threadsafe(self._drain(grace), self._loop)
        try:
            drained.result(timeout=grace + 2 * CLOSE_SECONDS)
        except TimeoutError:
            log.warning(
                "REST: connections still open %.0f s after the grace period; closing anyway", CLOSE_SECONDS
            )
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=CLOSE_SECONDS)
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def _drain(self, grace: float) -> None:
        self._server.stop()  # closes the listening sockets: new connections are refused
        self.draining = True
        deadline = self._loop.time() + grace
        while self.in_flight and self._loop.time() < deadline:
            await asyncio.sleep(0.02)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.close_all_connections(), CLOSE_SECONDS)
