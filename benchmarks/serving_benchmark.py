"""Serving benchmark: the pushed model over TF Serving's gRPC protocol vs. the same signature in process.

    python benchmarks/serving_benchmark.py --model-dir workdir/serving/fashion_mnist/<version>

Measures, in one run on real test images:
- single-image latency (p50, p99) of the `predict_images` signature called in
  process, and of `Predict` through `fmnist serve`'s gRPC server over loopback;
- throughput in images/s with several concurrent clients sending batches, for
  both, so the protocol's overhead is a ratio.
Writes one JSON and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import core  # noqa: F401  (first: pins Keras before TensorFlow loads)

# isort: split
import numpy as np
import tensorflow as tf

from core.config import ServingConfig
from core.image_files import load_images
from core.vocabulary import IMAGES_SIGNATURE, MODEL_NAME
from ingest.prepare import DEBIAN_DIR
from serving.client import ServingClient
from serving.server import build_server
from serving.version_manager import VersionManager

REPO = Path(__file__).resolve().parent.parent


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    return {
        "p50_ms": round(ordered[len(ordered) // 2], 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3),
        "mean_ms": round(statistics.fmean(ordered), 3),
    }


def latency(call, images: np.ndarray, requests: int) -> dict[str, float]:
    for i in range(20):  # warm up
        call(images[i : i + 1])
    samples = []
    for i in range(requests):
        start = time.perf_counter()
        call(images[i % len(images) : i % len(images) + 1])
        samples.append((time.perf_counter() - start) * 1000)
    return percentiles(samples)


def throughput(make_call, images: np.ndarray, clients: int, batch: int, seconds: float) -> float:
    counts = [0] * clients
    stop = time.monotonic() + seconds

    def worker(slot: int) -> None:
        call = make_call()
        offset = slot * batch
        while time.monotonic() < stop:
            start = offset % (len(images) - batch)
            call(images[start : start + batch])
            counts[slot] += batch
            offset += batch * clients

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return round(sum(counts) / (time.monotonic() - began), 1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model-dir", required=True, help="a pushed version directory (holds saved_model.pb)"
    )
    parser.add_argument("--requests", type=int, default=2000, help="single-image requests per latency figure")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each throughput figure")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "serving.json"))
    args = parser.parse_args()

    images = load_images(str(DEBIAN_DIR / "t10k-images-idx3-ubyte.gz"))

    signature = tf.saved_model.load(args.model_dir).signatures[IMAGES_SIGNATURE]

    def in_process(batch: np.ndarray):
        return signature(images=tf.constant(batch))

    base = Path(tempfile.mkdtemp())
    shutil.copytree(args.model_dir, base / MODEL_NAME / "1")
    store = VersionManager(str(base), poll_seconds=3600)
    store.poll_once()
    server, port = build_server(store, ServingConfig(model_base_path=str(base), port=0, workers=8))
    server.start()
    address = f"127.0.0.1:{port}"
    try:
        grpc_client = ServingClient(address, timeout=30)
        result = {
            "command": " ".join(["python benchmarks/serving_benchmark.py", *sys.argv[1:]]),
            "date": time.strftime("%Y-%m-%d"),
            "cores": os.cpu_count(),
            "model_dir": args.model_dir,
            "single_image": {
                "in_process": latency(in_process, images, args.requests),
                "grpc_loopback": latency(grpc_client.predict_images, images, args.requests),
            },
            "throughput_images_per_s": {
                "clients": args.clients,
                "batch": args.batch,
                "in_process": throughput(lambda: in_process, images, args.clients, args.batch, args.seconds),
                "grpc_loopback": throughput(
                    lambda: ServingClient(address, timeout=30).predict_images,
                    images,
                    args.clients,
                    args.batch,
                    args.seconds,
                ),  # fmt: skip
            },
        }
    finally:
        server.stop(grace=None)
        shutil.rmtree(base, ignore_errors=True)
    single, bulk = result["single_image"], result["throughput_images_per_s"]
    result["grpc_over_in_process"] = {
        "p50_latency_ratio": round(single["grpc_loopback"]["p50_ms"] / single["in_process"]["p50_ms"], 2),
        "throughput_ratio": round(bulk["grpc_loopback"] / bulk["in_process"], 2),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2))
    print(f"{'':<28}{'in process':>12}{'gRPC loopback':>15}")
    for key in ("p50_ms", "p99_ms"):
        local, remote = single["in_process"][key], single["grpc_loopback"][key]
        print(f"{'single image ' + key:<28}{local:>12.2f}{remote:>15.2f}")
    label = f"images/s ({args.clients}x batch {args.batch})"
    print(f"{label:<28}{bulk['in_process']:>12.0f}{bulk['grpc_loopback']:>15.0f}")
    print(f"figures: {args.output}")


if __name__ == "__main__":
    main()
