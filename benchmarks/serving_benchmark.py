"""Serving benchmark: the pushed model through `fmnist serve` (gRPC, REST, batching) vs. in process.

    python benchmarks/serving_benchmark.py --model-dir workdir/serving/fashion_mnist/<version>

Measures, in one run, on the official test images:
- single-image latency (p50, p99) of `predict_images` called in process, and
  of Predict over loopback gRPC (TF Serving's stub, requests built
  beforehand as a load generator would) and REST (TF Serving's JSON, one
  keep-alive connection); the overhead is each p50 minus the in-process p50;
- 32 concurrent clients sending single images, batching off vs on
  (TF Serving's `--enable_batching` with the parameters below): throughput
  and p99;
- throughput with 4 clients sending batches of 256, in process vs gRPC.
Writes one JSON and prints a table.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import core  # noqa: F401  (first: pins Keras before TensorFlow loads)

# isort: split
import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from core.config import ServingConfig
from core.image_files import load_images
from core.vocabulary import IMAGES_INPUT, IMAGES_SIGNATURE, MODEL_NAME
from ingest.prepare import DEBIAN_DIR
from serving.server import start
from serving.tensors import proto_from_array

REPO = Path(__file__).resolve().parent.parent
BATCHING_PARAMETERS = (
    "max_batch_size { value: 32 }\nbatch_timeout_micros { value: 1000 }\nnum_batch_threads { value: 2 }\n"
)


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    return {
        "p50_ms": round(ordered[len(ordered) // 2], 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3),
        "mean_ms": round(statistics.fmean(ordered), 3),
    }


def latency(call: Callable[[int], object], requests: int) -> dict[str, float]:
    """Sequential single-image calls; `call(i)` sends image i."""
    for i in range(50):  # warm up
        call(i)
    samples = []
    for i in range(requests):
        started = time.perf_counter()
        call(i)
        samples.append((time.perf_counter() - started) * 1000)
    return percentiles(samples)


def concurrent(make_call: Callable[[], Callable[[int], object]], clients: int, seconds: float) -> dict:
    """`clients` threads calling as fast as they can for `seconds`: requests/s and latency percentiles."""
    samples: list[list[float]] = [[] for _ in range(clients)]
    stop = time.monotonic() + seconds
    ready = threading.Barrier(clients + 1)

    def worker(slot: int) -> None:
        call = make_call()
        call(slot)  # connect and warm up before the clock starts
        ready.wait()
        i = slot
        while time.monotonic() < stop:
            started = time.perf_counter()
            call(i)
            samples[slot].append((time.perf_counter() - started) * 1000)
            i += clients

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    began = time.monotonic()
    stop = began + seconds
    for t in threads:
        t.join()
    flat = [s for per_client in samples for s in per_client]
    return {"requests_per_s": round(len(flat) / (time.monotonic() - began), 1), **percentiles(flat)}


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
    return lambda i: stub.Predict(requests[i % len(requests)], timeout=30)


def rest_caller(port: int, bodies: list[bytes]) -> Callable[[int], object]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    path = f"/v1/models/{MODEL_NAME}:predict"

    def call(i: int) -> dict:
        connection.request("POST", path, bodies[i % len(bodies)], {"Content-Type": "application/json"})
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"REST answered {response.status}: {body[:200]!r}")
        return json.loads(body)

    return call


def serve(model_dir: str, **fields) -> tuple:
    base = Path(tempfile.mkdtemp())
    shutil.copytree(model_dir, base / MODEL_NAME / "1")
    config = ServingConfig(model_base_path=str(base), port=0, rest_api_port=0, **fields)
    return start(config, rest_port=0), base


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

    images = load_images(str(DEBIAN_DIR / "t10k-images-idx3-ubyte.gz"))
    signature = tf.saved_model.load(args.model_dir).signatures[IMAGES_SIGNATURE]
    singles = predict_requests(images[:2000])
    bodies = [
        json.dumps({"signature_name": IMAGES_SIGNATURE, "instances": images[i : i + 1].tolist()}).encode()
        for i in range(500)
    ]
    batches = predict_requests(images, 256)

    def in_process(i: int, batch: int = 1):
        start = (i * batch) % (len(images) - batch)
        return signature(**{IMAGES_INPUT: tf.constant(images[start : start + batch])})

    result = {
        "command": " ".join(["python benchmarks/serving_benchmark.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cores": os.cpu_count(),
        "model_dir": args.model_dir,
        "batching_parameters": BATCHING_PARAMETERS.strip().splitlines(),
    }
    print("single-image latency ...", flush=True)
    running, base = serve(args.model_dir)
    try:
        result["single_image"] = {
            "in_process": latency(in_process, args.requests),
            "grpc": latency(grpc_caller(running.port, singles), args.requests),
            "rest": latency(rest_caller(running.rest_port, bodies), args.requests),
        }
        print(f"{args.clients} concurrent single-image clients, batching off ...", flush=True)
        off = concurrent(lambda: grpc_caller(running.port, singles), args.clients, args.seconds)
        print("4 clients x batch 256 ...", flush=True)
        result["batch_256_images_per_s"] = {
            "in_process": round(
                concurrent(lambda: lambda i: in_process(i, 256), 4, args.seconds)["requests_per_s"] * 256, 1
            ),
            "grpc": round(
                concurrent(lambda: grpc_caller(running.port, batches), 4, args.seconds)["requests_per_s"]
                * 256,
                1,
            ),
        }
    finally:
        running.stop()
        shutil.rmtree(base, ignore_errors=True)

    parameters = Path(tempfile.mkdtemp()) / "batching_parameters.txt"
    parameters.write_text(BATCHING_PARAMETERS)
    print(f"{args.clients} concurrent single-image clients, batching on ...", flush=True)
    running, base = serve(args.model_dir, enable_batching=True, batching_parameters_file=str(parameters))
    try:
        on = concurrent(lambda: grpc_caller(running.port, singles), args.clients, args.seconds)
        scheduler = running.runtime.scheduler
        on["mean_batch_size"] = round(scheduler.rows_run / max(1, scheduler.batches_run), 1)
    finally:
        running.stop()
        shutil.rmtree(base, ignore_errors=True)
    result["concurrent_single_images"] = {"clients": args.clients, "batching_off": off, "batching_on": on}

    single = result["single_image"]
    base_p50 = single["in_process"]["p50_ms"]
    result["overhead_over_in_process_p50_ms"] = {
        "grpc": round(single["grpc"]["p50_ms"] - base_p50, 3),
        "rest": round(single["rest"]["p50_ms"] - base_p50, 3),
    }
    result["batching_throughput_ratio"] = round(on["requests_per_s"] / off["requests_per_s"], 2)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")

    print(f"\n{'single image':<34}{'p50 ms':>10}{'p99 ms':>10}{'p50 overhead':>14}")
    for name in ("in_process", "grpc", "rest"):
        overhead = single[name]["p50_ms"] - base_p50
        print(f"{name:<34}{single[name]['p50_ms']:>10.2f}{single[name]['p99_ms']:>10.2f}{overhead:>13.2f}")
    print(f"\n{f'{args.clients} clients, single images':<34}{'req/s':>10}{'p99 ms':>10}{'mean batch':>14}")
    print(f"{'batching off':<34}{off['requests_per_s']:>10.0f}{off['p99_ms']:>10.1f}{1:>14}")
    print(f"{'batching on':<34}{on['requests_per_s']:>10.0f}{on['p99_ms']:>10.1f}{on['mean_batch_size']:>14}")
    bulk = result["batch_256_images_per_s"]
    print(f"\n{'4 clients x batch 256, images/s':<34}{'in process':>12}{'gRPC':>10}")
    print(f"{'':<34}{bulk['in_process']:>12.0f}{bulk['grpc']:>10.0f}")
    print(f"\nfigures: {args.output}")


if __name__ == "__main__":
    main()
