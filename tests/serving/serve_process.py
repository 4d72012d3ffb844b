"""`fmnist serve` in its own process, as a user starts it: for tests of its memory and its signals."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import grpc
import portpicker
import pytest
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

SECONDS_TO_START = 120
MAX_MESSAGE = 64 * 2**20  # the server's default --max-message-mb, in bytes
FMNIST = str(Path(sys.executable).parent / "fmnist")


def start(
    model: str, flags: list[str], command: list[str] | None = None
) -> tuple[subprocess.Popen, grpc.Channel]:
    """`command serve` (default `fmnist`) with `flags` on a free gRPC port, once `model` answers.

    Output goes to a pipe: read it with `communicate` (a full pipe would block the server).
    """
    port = portpicker.pick_unused_port()
    argv = [*(command or [FMNIST]), "serve", f"--port={port}", "--rest_api_port=0", *flags]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    channel = grpc.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", MAX_MESSAGE)]
    )
    status = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = model
    deadline = time.monotonic() + SECONDS_TO_START
    while True:
        try:
            status.GetModelStatus(request, timeout=5)
            return process, channel
        except grpc.RpcError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"fmnist serve did not start: {process.communicate()}")
            time.sleep(0.5)
