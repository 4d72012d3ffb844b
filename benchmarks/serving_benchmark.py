"""Serving benchmark: the pushed model through `fmnist serve` (gRPC, REST, batching) vs. in process.

    python benchmarks/serving_benchmark.py --model-dir workdir/serving/fashion_mnist/<version>

The server runs in this process, as `fmnist serve` does; clients run in a
separate process (TF Serving's stubs and JSON, requests built beforehand as
a load generator would), so they never compete with the server for its GIL.
Measured in one run, on the official test images:

- single-image latency (p50, p99): `predict_images` called in process; the
  server's layers called directly (the model call alone; + reading and
  checking the request's TensorProtos; + the response proto and metrics);
  Predict over loopback gRPC and over REST. The gRPC figure minus the
  in-process one is the protocol's overhead; the round trip of an empty
  Predict answered by a do-nothing gRPC servicer is its floor in Python;
- 32 concurrent clients sending single images, batching off vs on
  (TF Serving's `--enable_batching` with the parameters below): requests/s
  and p99;
- 4 clients sending batches of 256: images/s in process vs over gRPC.

Writes one JSON and prints a table.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path

from invocation import command_line

import core  # noqa: F401  (first: pins Keras before TensorFlow loads)

# isort: split
import grpc
import numpy as np
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from core.config import ServingConfig
from core.image_files import load_images
from core.vocabulary import IMAGES_INPUT, IMAGES_SIGNATURE, MODEL_NAME
from ingest.prepare import DEBIAN_DIR
from serving.server import start
from serving.tensors import proto_from_array

REPO = Path(__file__).resolve().parent.parent
TEST_IMAGES = DEBIAN_DIR / "t10k-images-idx3-ubyte.gz"
# TF Serving's text format; each is measured, and the fastest is the "batching on" figure.
BATCHING_SETTINGS = {
    "1 thread, no wait": (
        "max_batch_size { value: 32 } batch_timeout_micros { value: 0 } num_batch_threads { value: 1 }"
    ),
    "2 threads, no wait": (
        "max_batch_size { value: 32 } batch_timeout_micros { value: 0 } num_batch_threads { value: 2 }"
    ),
    "1 thread, 2 ms wait": (
        "max_batch_size { value: 32 } batch_timeout_micros { value: 2000 } num_batch_threads { value: 1 }"
    ),
}


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    return {
        "p50_ms": round(ordered[len(ordered) // 2], 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3),
        "mean_ms": round(statistics.fmean(ordered), 3),
    }


def latency(call: Callable[[int], object], requests: int) -> dict[str, float]:
    """Sequential calls after a warm-up; `call(i)` sends request i."""
    for i in range(50):
        call(i)
    samples = []
    for i in range(requests):
        started = time.perf_counter()
        call(i)
        samples.append((time.perf_counter() - started) * 1000)
    return percentiles(samples)


def concurrent(make_call: Callable[[], Callable[[int], object]], clients: int, seconds: float) -> dict:
    """`clients` threads calling back to back for `seconds`: requests/s and latency percentiles."""
    samples: list[list[float]] = [[] for _ in range(clients)]
    ready = threading.Barrier(clients + 1)
    window = {}

    def worker(slot: int) -> None:
        call = make_call()
        call(slot)  # connect and warm up before the clock starts
        ready.wait()
        i = slot
        while time.monotonic() < window["stop"]:
            started = time.perf_counter()
            call(i)
            samples[slot].append((time.perf_counter() - started) * 1000)
            i += clients

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    window["stop"] = time.monotonic() + 3600
    ready.wait()
    began = time.monotonic()
    window["stop"] = began + seconds
    for t in threads:
        t.join()
    flat = [s for per_client in samples for s in per_client]
    return {"requests_per_s": round(len(flat) / (time.monotonic() - began), 1), **percentiles(flat)}


# --- the client process ---------------------------------------------------------------------------
def predict_requests(images: np.ndarray, batch: int = 1) -> list[predict_pb2.PredictRequest]:
    requests = []
    for first in range(0, len(images) - batch + 1, batch):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = MODEL_NAME
        request.model_spec.signature_name = IMAGES_SIGNATURE
        request.inputs[IMAGES_INPUT].CopyFrom(proto_from_array(images[first : first + batch], content=True))
        requests.append(request)
    return requests


def grpc_caller(port: int, requests: list[predict_pb2.PredictRequest]) -> Callable[[int], object]:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    return lambda i: stub.Predict(requests[i % len(requests)], timeout=60)


def rest_caller(port: int, bodies: list[bytes]) -> Callable[[int], object]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    path = f"/v1/models/{MODEL_NAME}:predict"

    def call(i: int) -> dict:
        connection.request("POST", path, bodies[i % len(bodies)], {"Content-Type": "application/json"})
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"REST answered {response.status}: {body[:200]!r}")
        return json.loads(body)

    return call


def client_run(kind: str, port: int, batch: int, clients: int, amount: float) -> dict:
    """In the client process: `amount` sequential requests (clients 0) or `clients` for `amount` s."""
    images = load_images(str(TEST_IMAGES))
    if kind == "rest":
        bodies = [
            json.dumps(
                {"signature_name": IMAGES_SIGNATURE, "instances": images[i : i + batch].tolist()}
            ).encode()
            for i in range(0, 500 * batch, batch)
        ]
        make = lambda: rest_caller(port, bodies)  # noqa: E731
    else:
        requests = predict_requests(images[: 2000 * batch], batch)
        make = lambda: grpc_caller(port, requests)  # noqa: E731
    if clients == 0:
        return latency(make(), int(amount))
    return concurrent(make, clients, amount)


class ClientProcess:
    """One separate process that generates the load (spawned: no TensorFlow state shared)."""

    def __init__(self) -> None:
        self.pool = futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))

    def run(self, kind: str, port: int, batch: int = 1, clients: int = 0, amount: float = 2000) -> dict:
        return self.pool.submit(client_run, kind, port, batch, clients, amount).result()

    def close(self) -> None:
        self.pool.shutdown()


# --- the server side ------------------------------------------------------------------------------
class EmptyPrediction(prediction_service_pb2_grpc.PredictionServiceServicer):
    def Predict(self, request, context):
        return predict_pb2.PredictResponse()


def empty_server() -> tuple[grpc.Server, int]:
    """A do-nothing Predict servicer on grpcio's server: the floor of a Python gRPC round trip."""
    server = grpc.server(futures.ThreadPoolExecutor(32))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(EmptyPrediction(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def stages(running, requests: list[predict_pb2.PredictRequest], count: int) -> dict[str, dict]:
    """Where a single-image Predict's time goes inside the server: each layer called directly."""
    runtime = running.runtime
    loaded = runtime.resolve(requests[0].model_spec)
    arrays = [{IMAGES_INPUT: images_of(r)} for r in requests]
    limits = runtime.limits
    return {
        "model_call": latency(lambda i: loaded.run(IMAGES_SIGNATURE, arrays[i % len(arrays)]), count),
        "plus_request_checks": latency(
            lambda i: loaded.predict(IMAGES_SIGNATURE, requests[i % len(requests)].inputs, [], limits), count
        ),
        "plus_response_and_metrics": latency(lambda i: runtime.predict(requests[i % len(requests)]), count),
    }


def images_of(request: predict_pb2.PredictRequest) -> np.ndarray:
    proto = request.inputs[IMAGES_INPUT]
    return np.frombuffer(proto.tensor_content, np.uint8).reshape([d.size for d in proto.tensor_shape.dim])


def serve(model_dir: str, **fields) -> tuple:
    base = Path(tempfile.mkdtemp())
    shutil.copytree(model_dir, base / MODEL_NAME / "1")
    config = ServingConfig(model_base_path=str(base), port=0, rest_api_port=0, **fields)
    return start(config, rest_port=0), base


def measure(args: argparse.Namespace, clients: ClientProcess) -> dict:
    import tensorflow as tf

    images = load_images(str(TEST_IMAGES))
    signature = tf.saved_model.load(args.model_dir).signatures[IMAGES_SIGNATURE]

    def in_process(i: int, batch: int = 1):
        first = (i * batch) % (len(images) - batch)
        return signature(**{IMAGES_INPUT: tf.constant(images[first : first + batch])})

    result: dict = {}
    floor_server, floor_port = empty_server()
    result["grpc_floor_empty_predict"] = clients.run("grpc", floor_port, amount=args.requests)
    floor_server.stop(None)

    print("single-image latency ...", flush=True)
    running, base = serve(args.model_dir)
    try:
        result["single_image"] = {
            "in_process": latency(in_process, args.requests),
            **stages(running, predict_requests(images[:2000]), args.requests),
            "grpc": clients.run("grpc", running.port, amount=args.requests),
            "rest": clients.run("rest", running.rest_port, amount=args.requests),
        }
        print(f"{args.clients} concurrent single-image clients, batching off ...", flush=True)
        off = clients.run("grpc", running.port, clients=args.clients, amount=args.seconds)
        print("4 clients x batch 256 ...", flush=True)
        bulk_local = concurrent(lambda: lambda i: in_process(i, 256), 4, args.seconds)
        bulk_grpc = clients.run("grpc", running.port, batch=256, clients=4, amount=args.seconds)
        result["batch_256_images_per_s"] = {
            "in_process": round(bulk_local["requests_per_s"] * 256, 1),
            "grpc": round(bulk_grpc["requests_per_s"] * 256, 1),
        }
    finally:
        running.stop()
        shutil.rmtree(base, ignore_errors=True)

    batching = {}
    for name, text in BATCHING_SETTINGS.items():
        parameters = Path(tempfile.mkdtemp()) / "batching_parameters.txt"
        parameters.write_text(text + "\n")
        print(f"{args.clients} concurrent single-image clients, batching on ({name}) ...", flush=True)
        running, base = serve(args.model_dir, enable_batching=True, batching_parameters_file=str(parameters))
        try:
            batching[name] = clients.run("grpc", running.port, clients=args.clients, amount=args.seconds)
            scheduler = running.runtime.scheduler
            batching[name]["mean_batch_size"] = round(scheduler.rows_run / max(1, scheduler.batches_run), 1)
            batching[name]["parameters"] = text
        finally:
            running.stop()
            shutil.rmtree(base, ignore_errors=True)
    best = max(batching, key=lambda name: batching[name]["requests_per_s"])
    on = {**batching[best], "setting": best}
    result["concurrent_single_images"] = {
        "clients": args.clients, "batching_off": off, "batching_on": on, "batching_settings": batching,
    }  # fmt: skip
    return result


def print_table(result: dict) -> None:
    single = result["single_image"]
    base_p50 = single["in_process"]["p50_ms"]
    print(f"\n{'single image':<34}{'p50 ms':>10}{'p99 ms':>10}{'p50 - in process':>18}")
    for name, figures in single.items():
        overhead = figures["p50_ms"] - base_p50
        print(f"{name:<34}{figures['p50_ms']:>10.2f}{figures['p99_ms']:>10.2f}{overhead:>18.2f}")
    floor = result["grpc_floor_empty_predict"]
    print(f"{'empty Predict round trip (floor)':<34}{floor['p50_ms']:>10.2f}{floor['p99_ms']:>10.2f}")
    runs = result["concurrent_single_images"]
    title = f"{runs['clients']} clients, single images"
    print(f"\n{title:<34}{'req/s':>10}{'p99 ms':>10}{'mean batch':>18}")
    for name, figures in {"batching off": runs["batching_off"], **runs["batching_settings"]}.items():
        batch = figures.get("mean_batch_size", 1)
        print(f"{name:<34}{figures['requests_per_s']:>10.0f}{figures['p99_ms']:>10.1f}{batch:>18}")
    bulk = result["batch_256_images_per_s"]
    print(f"\n{'4 clients x batch 256, images/s':<34}{'in process':>12}{'gRPC':>10}")
    print(f"{'':<34}{bulk['in_process']:>12.0f}{bulk['grpc']:>10.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model-dir", required=True, help="a pushed version directory (holds saved_model.pb)"
    )
    parser.add_argument("--requests", type=int, default=2000, help="single-image requests per latency figure")
    parser.add_argument("--clients", type=int, default=32, help="concurrent single-image clients")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each concurrent figure")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "serving.json"))
    args = parser.parse_args()

    clients = ClientProcess()
    try:
        figures = measure(args, clients)
    finally:
        clients.close()
    single, runs = figures["single_image"], figures["concurrent_single_images"]
    result = {
        "command": command_line(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cores": os.cpu_count(),
        "model_dir": args.model_dir,
        **figures,
        "overhead_over_in_process_p50_ms": {
            "grpc": round(single["grpc"]["p50_ms"] - single["in_process"]["p50_ms"], 3),
            "rest": round(single["rest"]["p50_ms"] - single["in_process"]["p50_ms"], 3),
        },
        "batching_throughput_ratio": round(
            runs["batching_on"]["requests_per_s"] / runs["batching_off"]["requests_per_s"], 2
        ),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(f"\nfigures: {args.output}")


if __name__ == "__main__":
    main()
