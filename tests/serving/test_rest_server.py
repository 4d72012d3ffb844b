"""The REST server on the wire: TF Serving's routing and statuses, body limits, quiet logs, a draining stop.

Expected statuses are TF Serving's (tensorflow/serving at 9d981c5c2708d23c5407c7c1e30309e6f9798874),
cited per test: `model_servers/http_server.cc` (dispatch, OPTIONS, `ToHTTPStatusCode`),
`model_servers/http_rest_api_handler.cc` (`ProcessRequest`), `model_servers/http_rest_api_util.cc`
(`kPredictionApiGegex`, `kModelStatusApiRegex`, `ParseModelInfo`), `util/json_tensor.cc`, and
`util/net_http/server/internal/evhttp_request.cc`, `evhttp_server.cc` (gzip bodies, allowed
methods). TF Serving limits no body; the 413s here are this server's own limits, with libevent's
status for a body over a limit. Models: TF Serving's half_plus_two as `default`, and `pixels`,
a uint8 model built here.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import logging
import socket
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from core.config import ServingConfig
from serving.rest_server import RateLimitedLog, RestServer
from serving.server import start
from tests.serving import half_plus_two

MB = 2**20
LIMIT = 64 * MB  # ServingConfig's default --max-message-mb


def build_pixels(export_dir: str) -> None:
    """A uint8 model: `serving_default` x [None] -> y = x as int32; `sums` images [None, 28, 28] -> totals."""

    class Pixels(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.uint8)])
        def identity(self, x):
            return {"y": tf.cast(x, tf.int32)}

        @tf.function(input_signature=[tf.TensorSpec([None, 28, 28], tf.uint8)])
        def sums(self, images):
            return {"totals": tf.reduce_sum(tf.cast(images, tf.int32), axis=[1, 2])}

    module = Pixels()
    tf.saved_model.save(
        module, export_dir, signatures={"serving_default": module.identity, "sums": module.sums}
    )


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("models")
    half_plus_two.build(str(base / "default" / "1"))
    build_pixels(str(base / "pixels" / "1"))
    server = start(ServingConfig(model_base_path=str(base), port=0, rest_api_port=0), rest_port=0)
    yield server
    server.stop()


def call(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None, timeout=30
):
    """One request on a fresh connection: (status, body bytes, response headers)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read(), response.headers
    finally:
        connection.close()


def error_of(data: bytes) -> str:
    return json.loads(data)["error"]


def post(running, path: str, document, **kwargs):
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    return call(running.rest_port, "POST", path, body, **kwargs)


def raw_request(port: int, request: bytes, timeout: float = 10) -> tuple[int, bytes]:
    """Send raw bytes (a path http.client would refuse); the status and the body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head, _, rest = data.partition(b"\r\n\r\n")
        length = int(
            next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))[15:]
        )
        while len(rest) < length:
            rest += sock.recv(65536)
        return int(head.split()[1]), rest[:length]


@contextlib.contextmanager
def peak_rss_growth():
    """Sample this process's RSS every 2 ms; yields a dict whose "mb" is the peak growth in MB."""
    page = 4096

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    result, stop = {"mb": 0.0}, threading.Event()
    baseline = rss()

    def sample() -> None:
        while not stop.is_set():
            result["mb"] = max(result["mb"], (rss() - baseline) / MB)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        yield result
    finally:
        stop.set()
        sampler.join()


# --- item 7: no 500, no HTML, for what a client may send -------------------------------------------------
def test_a_version_beyond_int64_is_400_failed_to_convert_as_parse_model_info(running):
    # http_rest_api_util.cc ParseModelInfo (lines 115-121): SimpleAtoi fails -> InvalidArgument -> 400.
    for method, path in (
        ("GET", "/v1/models/default/versions/99999999999999999999999"),
        ("POST", "/v1/models/default/versions/9223372036854775808:predict"),
    ):
        status, data, headers = call(running.rest_port, method, path, b'{"instances": [1.0]}')
        assert status == 400 and headers["Content-Type"] == "application/json"
        assert error_of(data) == f"Failed to convert version: {path.split('/')[-1].split(':')[0]} to numeric."


@pytest.mark.parametrize("signature", ["serving_default", "classify_x_to_y"])  # float input, string input
def test_json_nested_900_deep_is_400_naming_the_input(running, signature: str):
    # TF Serving builds the tensor and TensorFlow refuses a rank over 254 ("tensor parsing error", 400).
    nested = "[" * 900 + '"1"' + "]" * 900 if signature == "classify_x_to_y" else "[" * 900 + "1" + "]" * 900
    status, data, _ = post(
        running,
        "/v1/models/default:predict",
        f'{{"signature_name": "{signature}", "instances": {nested}}}'.encode(),
    )
    assert status == 400 and "254" in error_of(data)
    status, data, _ = post(
        running, "/v1/models/default:predict", b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    )
    assert status == 400 and error_of(data).startswith("JSON Parse error")


def test_a_lone_surrogate_is_400_parse_error_as_rapidjson(running):
    # json_tensor.cc ParseJson (lines 483-490): kParseErrorStringUnicodeSurrogateInvalid -> 400.
    body = b'{"signature_name": "classify_x_to_y", "instances": ["\\ud800"]}'
    status, data, _ = post(running, "/v1/models/default:predict", body)
    assert (status, error_of(data)) == (400, "JSON Parse error: The surrogate pair in string is invalid.")


def test_2_to_the_70_in_a_classify_feature_is_a_float_as_in_tf_serving(running):
    # rapidjson reads an integer beyond uint64 as a double; AddValueToFeature (lines 775-779) makes it
    # a float feature, which half_plus_two's float `x` takes: 200, y = 0.5 x + 2.
    status, data, _ = post(
        running,
        "/v1/models/default:classify",
        f'{{"signature_name": "classify_x_to_y", "examples": [{{"x": {2**70}}}]}}'.encode(),
    )
    assert status == 200
    assert json.loads(data)["results"][0][0][1] == pytest.approx(float(np.float32(2.0**70)) / 2, rel=1e-6)


# --- item 8: wrongly typed values are refused, as json_tensor.cc refuses them -----------------------
@pytest.mark.parametrize("value", ["0.5", '"12"', "true", str(2**40)])
def test_a_wrongly_typed_uint8_value_is_400_as_add_value_to_tensor(running, value: str):
    # json_tensor.cc AddValueToTensor (lines 303-309): DT_UINT8 takes only IsInt() values -> TypeError, 400.
    status, data, _ = post(running, "/v1/models/pixels:predict", f'{{"instances": [{value}]}}'.encode())
    assert status == 400
    assert error_of(data).endswith("is not of expected type: uint8")


def test_a_uint8_value_is_read_as_that_value(running):
    status, data, _ = post(running, "/v1/models/pixels:predict", b'{"instances": [0, 12, 255]}')
    assert (status, json.loads(data)) == (200, {"predictions": [0, 12, 255]})


@pytest.mark.parametrize("value", ["0", "null"])
def test_a_signature_name_that_is_not_a_string_is_400_as_fill_signature(running, value: str):
    # json_tensor.cc FillSignature (lines 505-517): not a string -> FormatSignatureError, 400.
    status, data, _ = post(
        running, "/v1/models/default:predict", f'{{"signature_name": {value}, "instances": [1.0]}}'.encode()
    )
    assert status == 400 and "'signature_name' key must be a string value" in error_of(data)


@pytest.mark.parametrize(
    ("api", "signature", "value", "message"),
    [  # json_tensor.cc AddValueToFeature: a uint64 value (lines 784-788); a value of another kind than
        # the feature's first, which made it int64 (lines 774-783) -- items 7 and 8 of the issue.
        (
            "regress",
            "regress_x_to_y",
            "18446744073709551615",
            "Feature: x has uint64_t element. Only int64_t is supported.",
        ),
        (
            "classify",
            "classify_x_to_y",
            "[1, 2.5]",
            "Unexpected element type in feature: x expecting type: int64",
        ),
    ],
)
def test_a_feature_value_tf_serving_refuses_is_400_naming_the_feature(
    running, api, signature, value, message
):
    body = f'{{"signature_name": "{signature}", "examples": [{{"x": {value}}}]}}'.encode()
    status, data, _ = post(running, f"/v1/models/default:{api}", body)
    assert (status, error_of(data)) == (400, message)


# --- item 15: routing as TF Serving routes ------------------------------------------------------------
ROUTES = [
    # http_rest_api_handler.cc ProcessRequest: status starts as InvalidArgument "Malformed request"
    # (lines 74-75) and stays so unless a POST/GET path parses (lines 85-105); 400 by http_server.cc:56-57.
    ("POST", "/v1/foo", 400, "Malformed request: POST /v1/foo"),
    ("GET", "/v1/models/default/bogus", 400, "Malformed request: GET /v1/models/default/bogus"),
    ("POST", "/v1/models/default:predict?x=1", 400, "Malformed request"),  # the regex sees the query
    ("PUT", "/v1/models/default:predict", 400, "Malformed request: PUT /v1/models/default:predict"),
    ("DELETE", "/v1/models/default", 400, "Malformed request: DELETE /v1/models/default"),
    ("PATCH", "/v1/models/default", 400, "Malformed request"),
    # kModelStatusApiRegex's `(\d+)` (http_rest_api_util.cc:34) takes no sign and, in RE2, ASCII only.
    ("GET", "/v1/models/default/versions/-1", 400, "Malformed request"),
    ("GET", "/v1/models/pixels/versions/%D9%A1", 400, "Malformed request"),
    # The regexes match the raw path: an encoded ':' is part of the name, so no verb follows.
    ("POST", "/v1/models/default%3Apredict", 400, "Malformed request"),
    # The verb is compared case-sensitively after a case-insensitive match (lines 86-95).
    ("POST", "/v1/models/default:PREDICT", 400, "Malformed request"),
    # ProcessModelStatusRequest (lines 187-189).
    ("GET", "/v1/models", 400, "Missing model name in request."),
    # DecodeArg (curl_easy_unescape) decodes %ff to a byte no model is named with: NOT_FOUND, 404.
    ("GET", "/v1/models/%ff", 404, ""),
    # A GET's name takes the query too (`[^/:]+`): no such model.
    ("GET", "/v1/models/default?x=1", 404, ""),
    # evhttp_server.cc:114-117 allows no TRACE; libevent answers 501 (evhttp_handle_request).
    ("TRACE", "/v1/models/default", 501, "TRACE"),
    # Outside (?i)/v1/.* no dispatcher takes it (http_server.cc:141-148): 404 (evhttp_server.cc:175-177).
    ("GET", "/v2/models/default", 404, "Malformed request"),
]


@pytest.mark.parametrize(("method", "path", "status", "message"), ROUTES)
def test_rest_routing_matches_tf_serving(running, method: str, path: str, status: int, message: str):
    got, data, headers = call(running.rest_port, method, path, b"{}" if method != "GET" else None)
    assert got == status, data
    assert headers["Content-Type"] == "application/json" and message in error_of(data)


def test_the_path_is_case_insensitive_and_metadata_is_matched_exactly(running):
    # `(?i)` in both regexes; `model_subresource == "metadata"` is case-sensitive (line 98), so
    # /METADATA is a status request.
    status, data, _ = call(running.rest_port, "GET", "/V1/MODELS/default")
    assert status == 200 and json.loads(data)["model_version_status"][0]["state"] == "AVAILABLE"
    status, data, _ = call(running.rest_port, "GET", "/v1/models/default/METADATA")
    assert status == 200 and "model_version_status" in json.loads(data)


def test_a_head_request_is_400_without_a_body(running):
    status, data, _ = call(running.rest_port, "HEAD", "/v1/models/default")
    assert (status, data) == (400, b"")


def test_non_ascii_digits_are_not_a_version(running):
    status, data = raw_request(
        running.rest_port, "GET /v1/models/pixels/versions/\u0661 HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    )
    assert status == 400 and error_of(data).startswith("Malformed request")


def test_options_is_a_cors_preflight_as_in_http_server(running):
    # http_server.cc ProcessRequest (lines 170-177): OK when Origin matches https?://, else
    # FAILED_PRECONDITION (400); CORS headers only with --rest_api_enable_cors_support (lines 183-185).
    status, data, headers = call(
        running.rest_port, "OPTIONS", "/v1/models/default:predict", headers={"Origin": "https://example.com"}
    )
    assert (status, data) == (200, b"") and "Access-Control-Allow-Origin" not in headers
    status, data, _ = call(running.rest_port, "OPTIONS", "/v1/models/default:predict")
    assert status == 400 and error_of(data) == "Origin header is missing in CORS preflight"


def test_cors_headers_when_enabled_are_tf_servings(running):
    # http_rest_api_util.cc AddCORSHeaders (lines 40-44), on every /v1 answer.
    rest = RestServer(running.runtime, ServingConfig(port=0, rest_api_enable_cors_support=True), port=0)
    try:
        expected = {
            "Access-Control-Allow-Origin": "*",
            "Access-Control-Allow-Methods": "POST, GET",
            "Access-Control-Allow-Headers": "Content-Type",
        }
        for method, path, body in (
            ("OPTIONS", "/v1/models/default:predict", None),
            ("POST", "/v1/models/default:predict", b'{"instances": [1.0]}'),
            ("POST", "/v1/models/nope:predict", b'{"instances": [1.0]}'),
        ):
            _, _, headers = call(rest.port, method, path, body, headers={"Origin": "http://a.example"})
            assert {k: headers[k] for k in expected} == expected, (method, path)
    finally:
        rest.stop()


def test_a_gzip_body_is_decompressed_as_tf_serving_does(running):
    # evhttp_request.cc ReadRequestBytes / NeedUncompressGzipContent (lines 181-183, 261-268):
    # auto_uncompress_input defaults to true (httpserver_interface.h:123).
    body = gzip.compress(b'{"instances": [2.0, 4.0]}')
    status, data, _ = post(running, "/v1/models/default:predict", body, headers={"Content-Encoding": "gzip"})
    assert (status, json.loads(data)) == (200, {"predictions": [3.0, 4.0]})
    status, data, _ = post(
        running, "/v1/models/default:predict", body[:-8], headers={"Content-Encoding": "gzip"}
    )
    assert status == 400 and error_of(data).startswith("JSON Parse error: The document is empty")


# --- item 11: large bodies are refused early, cheaply, without starving anyone ----------------------
def test_a_body_over_the_limit_is_refused_by_its_content_length_before_it_is_read(running, caplog):
    caplog.set_level(logging.WARNING)
    started = time.perf_counter()
    status, data = raw_request(
        running.rest_port,
        b"POST /v1/models/default:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 209715200\r\n\r\n",
        timeout=5,
    )  # no body sent: the answer cannot wait for it
    assert time.perf_counter() - started < 2
    assert status == 413 and "209715200 bytes" in error_of(data) and str(LIMIT) in error_of(data)
    assert any("413" in r.getMessage() and "209715200" in r.getMessage() for r in caplog.records)


def test_a_100_mb_body_gets_a_json_413_not_a_connection_reset(running):
    status, data, _ = post(running, "/v1/models/default:predict", b"[" + b" " * (100 * MB) + b"]")
    assert status == 413 and "104857602 bytes" in error_of(data)
    status, _, _ = post(running, "/v1/models/default:predict", b'{"instances": [1.0]}')
    assert status == 200


def test_a_chunked_body_over_the_limit_is_413(running):
    def chunks():  # a body of unknown length: http.client sends it chunked
        for _ in range(70):
            yield b" " * MB

    status, data, _ = call(running.rest_port, "POST", "/v1/models/default:predict", chunks())
    assert status == 413 and "chunked" in error_of(data)


def zeros_body(size: int) -> bytes:
    """About `size` bytes of `{"instances": [0,0,...]}`: the cheapest JSON values to send."""
    return b'{"instances": [' + b"0," * (size // 2 - 10) + b"0]}"


def test_a_50_mb_body_of_tiny_values_is_refused_before_parsing_quickly_and_cheaply(running):
    body = zeros_body(50 * MB)
    with peak_rss_growth() as growth:
        started = time.perf_counter()
        status, data, _ = post(running, "/v1/models/default:predict", body)
        elapsed = time.perf_counter() - started
    assert status == 413 and "JSON values" in error_of(data)
    assert elapsed < 3.0  # the old server took 5.5 s here
    assert growth["mb"] < 200  # the body arrives (50 MB, and its copy in flight); nothing is parsed


def test_three_large_bodies_at_once_do_not_starve_rest_or_grpc_clients(running):
    body = zeros_body(50 * MB)
    statuses, latencies = [], []

    def send_large() -> None:
        statuses.append(post(running, "/v1/models/default:predict", body, timeout=60)[0])

    large = [threading.Thread(target=send_large) for _ in range(3)]
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "default"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.0]], dtype=tf.float32))
    for thread in large:
        thread.start()
    while any(thread.is_alive() for thread in large):
        started = time.perf_counter()
        assert post(running, "/v1/models/default:predict", b'{"instances": [1.0]}', timeout=10)[0] == 200
        stub.Predict(request, timeout=10)
        latencies.append(time.perf_counter() - started)
    channel.close()
    assert statuses == [413] * 3
    assert max(latencies) < 2.0, latencies  # a small REST call and a gRPC call, while the large ones run


def test_the_largest_batch_of_images_is_accepted(running):
    images = np.arange(1024 * 784, dtype=np.int64).reshape(1024, 28, 28) % 256
    document = {"signature_name": "sums", "instances": images.tolist()}
    status, data, _ = post(running, "/v1/models/pixels:predict", document)
    assert status == 200 and json.loads(data)["predictions"] == images.sum(axis=(1, 2)).tolist()


def test_a_gzip_bomb_is_refused_without_inflating_it(running):
    bomb = gzip.compress(b" " * (4 * LIMIT), compresslevel=9)  # 250 KB that inflate to 256 MB
    with peak_rss_growth() as growth:
        status, data, _ = post(
            running, "/v1/models/default:predict", bomb, headers={"Content-Encoding": "gzip"}
        )
    assert status == 413 and "gzip" in error_of(data)
    assert growth["mb"] < 200


# --- items 7, 8, 11, 15 together: nothing leaves a traceback, the log stays short ----------------------
BAD_REQUESTS = [
    ("GET", "/v1/models/default/versions/99999999999999999999999", None, {}),
    ("POST", "/v1/models/default:predict", b'{"instances": ' + b"[" * 900 + b"1" + b"]" * 900 + b"}", {}),
    ("POST", "/v1/models/default:predict", b'{"instances": ["\\ud800"]}', {}),
    ("POST", "/v1/models/default:regress", b'{"examples": [{"x": 18446744073709551615}]}', {}),
    ("POST", "/v1/models/default:classify", b'{"examples": [{"x": [1, 2.5]}]}', {}),
    ("POST", "/v1/models/pixels:predict", b'{"instances": [0.5, "12", true]}', {}),
    ("POST", "/v1/models/default:predict", b'{"signature_name": 0, "instances": [1.0]}', {}),
    ("PUT", "/v1/models/default", b"{}", {}),
    ("OPTIONS", "/v1/models/default", None, {}),
    ("GET", "/v1/models/%ff", None, {}),
    ("POST", "/v1/models/default:predict", b"\x1f\x8b not gzip", {"Content-Encoding": "gzip"}),
    ("POST", "/v1/models/default:predict", b"{" * 5000, {}),
    ("POST", "/v1/models/default:predict", b'{"instances": [1e999]}', {}),
]


def test_bad_requests_leave_no_traceback_and_a_short_rate_limited_log(running, caplog):
    caplog.set_level(logging.DEBUG)
    started = time.perf_counter()
    for i in range(100):
        method, path, body, headers = BAD_REQUESTS[i % len(BAD_REQUESTS)]
        status, data, response_headers = call(running.rest_port, method, path, body, headers)
        assert 400 <= status < 500, (method, path, status, data)
        assert response_headers["Content-Type"] == "application/json" and error_of(data)
    with socket.create_connection(("127.0.0.1", running.rest_port), timeout=10) as sock:  # tornado's own 400
        sock.sendall(b"POST /v1/models/default:predict HTTP/1.1\r\nContent-Length: abc\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 400")
    elapsed = time.perf_counter() - started
    records = [r for r in caplog.records if r.name.startswith(("serving", "tornado", "asyncio"))]
    assert not [r for r in records if r.exc_info or "Traceback" in r.getMessage()]
    assert len(records) <= 12, [r.getMessage() for r in records]  # ten a window, then a count
    assert elapsed < 10


def test_the_log_keeps_ten_lines_a_window_and_counts_the_rest():
    logger = logging.getLogger("tests.rate_limited")
    logger.setLevel(logging.INFO)
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger.addHandler(handler)
    try:
        limited = RateLimitedLog(logger, burst=10, period=0.3)
        for i in range(25):
            limited(logging.WARNING, f"line {i}")
        time.sleep(0.35)
        limited(logging.WARNING, "after")
    finally:
        logger.removeHandler(handler)
    assert lines == [f"line {i}" for i in range(10)] + [
        "after (15 more lines like these were dropped before this one)"
    ]


# --- item 9: stop drains in-flight calls ----------------------------------------------------------------
@pytest.fixture
def slow_rest(running, monkeypatch):
    """A REST server over the module's runtime whose model calls take `delay["seconds"]`."""
    delay = {"seconds": 1.5}
    run = running.runtime.run

    def slow_run(*args, **kwargs):
        time.sleep(delay["seconds"])
        return run(*args, **kwargs)

    monkeypatch.setattr(running.runtime, "run", slow_run)
    rest = RestServer(running.runtime, ServingConfig(port=0), port=0)
    yield rest, delay
    rest.stop(grace_seconds=0)


def concurrent_predicts(port: int, count: int) -> tuple[list[threading.Thread], list]:
    outcomes = []

    def one() -> None:
        try:
            outcomes.append(
                call(port, "POST", "/v1/models/default:predict", b'{"instances": [1.0]}', timeout=20)[0]
            )
        except OSError as err:
            outcomes.append(type(err).__name__)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads, outcomes


def test_stop_lets_in_flight_rest_calls_finish_within_the_grace(slow_rest):
    rest, _ = slow_rest
    threads, outcomes = concurrent_predicts(rest.port, 40)  # the 40 clients (32 threads answer)
    time.sleep(0.5)  # all forty are in: in the model call, or queued for a thread
    started = time.perf_counter()
    rest.stop(grace_seconds=10.0)
    stopped_after = time.perf_counter() - started
    for thread in threads:
        thread.join()
    assert outcomes == [200] * 40
    assert stopped_after < 8.0  # it waited for the calls (two rounds of 1.5 s), not for the whole grace
    with pytest.raises(ConnectionRefusedError):
        call(rest.port, "GET", "/v1/models/default")


def test_stop_closes_calls_still_running_after_the_grace(slow_rest):
    rest, delay = slow_rest
    delay["seconds"] = 8.0
    threads, outcomes = concurrent_predicts(rest.port, 4)
    time.sleep(0.5)
    started = time.perf_counter()
    rest.stop(grace_seconds=0.5)
    assert time.perf_counter() - started < 4.0
    for thread in threads:
        thread.join(timeout=4.0)
    assert not any(thread.is_alive() for thread in threads)  # clients see the close, not a hang
    assert len(outcomes) == 4 and 200 not in outcomes


def test_a_request_on_an_open_connection_while_draining_is_503(slow_rest):
    rest, _ = slow_rest
    kept = http.client.HTTPConnection("127.0.0.1", rest.port, timeout=10)
    kept.request("GET", "/v1/models/default")
    assert kept.getresponse().read() and True
    threads, outcomes = concurrent_predicts(rest.port, 1)
    time.sleep(0.5)
    stopper = threading.Thread(target=rest.stop, kwargs={"grace_seconds": 10.0})
    stopper.start()
    while not rest.draining:
        time.sleep(0.01)
    kept.request("GET", "/v1/models/default")
    response = kept.getresponse()
    # UNAVAILABLE -> SERVICE_UNAV (http_server.cc:78-79)
    assert (response.status, error_of(response.read())) == (503, "the server is shutting down")
    kept.close()
    stopper.join()
    threads[0].join()
    assert outcomes == [200]
