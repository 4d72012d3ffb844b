"""mitmproxy addon for `tests/services/gcs.py` (runs inside mitmproxy, in .venv-services).

- Requests for Google's storage hosts go to the local fake-gcs-server, with
  their Host header kept (fake-gcs-server tells media downloads from API calls
  by it); upload `Location`s come back as https, so the upload stays on the
  proxy.
- TensorFlow's libcurl sends empty POSTs with both `Transfer-Encoding:
  identity` and `Content-Length: 0`, which Go's HTTP server refuses (501): the
  former is dropped.
- The JSON API's batch endpoint, which Beam's file sinks use to finalize
  (copy and delete in one request) and fake-gcs-server lacks, is answered by
  running each part against the server and packing the answers as the
  `google-cloud-storage` client parses them.
- OAuth token refreshes get a test token.
"""

import email.parser
import os
import urllib.error
import urllib.parse
import urllib.request
import uuid

from mitmproxy import http

TARGET = int(os.environ["FAKE_GCS_PORT"])
HOSTS = {"www.googleapis.com", "storage.googleapis.com"}


def _call(method: str, uri: str, headers: dict, data: bytes | None):
    parts = urllib.parse.urlsplit(uri)
    target = f"http://127.0.0.1:{TARGET}{parts.path}" + (f"?{parts.query}" if parts.query else "")
    keep = {k: v for k, v in headers.items() if k.lower() == "content-type"}
    request = urllib.request.Request(target, data=data, method=method, headers=keep)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.reason, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        return err.code, err.reason, err.read(), err.headers.get("Content-Type", "")


def _batch(flow: http.HTTPFlow) -> None:
    content_type = flow.request.headers["Content-Type"]
    message = email.parser.BytesParser().parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + flow.request.get_content()
    )
    boundary, out = f"batch_{uuid.uuid4().hex}", []
    for part in message.get_payload():
        raw = part.get_payload()
        request_line, rest = raw.split("\n", 1)
        method, uri = request_line.strip().split(" ")[:2]
        inner = email.parser.Parser().parsestr(rest)
        data = inner.get_payload()
        status, reason, body, body_type = _call(
            method, uri, dict(inner.items()), data.encode() if data else None
        )
        content_id = (part.get("Content-ID") or "").strip("<>")
        out.append(
            f"--{boundary}\r\nContent-Type: application/http\r\nContent-ID: <response-{content_id}>\r\n\r\n"
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {body_type or 'application/json'}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body.decode()}\r\n"
        )
    out.append(f"--{boundary}--\r\n")
    flow.response = http.Response.make(
        200, "".join(out).encode(), {"Content-Type": f"multipart/mixed; boundary={boundary}"}
    )


def request(flow: http.HTTPFlow) -> None:
    if flow.request.pretty_host == "oauth2.googleapis.com":  # any refresh token gets a test token
        flow.response = http.Response.make(
            200,
            b'{"access_token": "test", "expires_in": 3600, "token_type": "Bearer"}',
            {"Content-Type": "application/json"},
        )
        return
    if "Transfer-Encoding" in flow.request.headers and "Content-Length" in flow.request.headers:
        del flow.request.headers["Transfer-Encoding"]  # TF's libcurl sends both on empty POSTs
    if flow.request.path.startswith("/batch/storage/v1"):
        _batch(flow)
        return
    if flow.request.pretty_host in HOSTS:
        host = flow.request.pretty_host
        flow.request.scheme, flow.request.host, flow.request.port = "http", "127.0.0.1", TARGET
        flow.request.headers["Host"] = host


def response(flow: http.HTTPFlow) -> None:
    location = flow.response.headers.get("Location")
    if location and location.startswith("http://"):
        for host in HOSTS:
            location = location.replace(f"http://{host}/", f"https://{host}/")
        flow.response.headers["Location"] = location
