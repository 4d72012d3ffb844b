"""Request logging in TF Serving's format: sampled `PredictionLog` records in rotating TFRecord files.

TF Serving's request logger writes the same records (in builds that register a
log collector; the stock Docker image has none, see the README), so the drift
report reads the logs of this server, of such a TF Serving, or of a caller that
logs with this class, alike.
Files are named `<prefix>-<unix ms>-<n>.tfrecord`; a file is closed after
`records_per_file` records and a new one opened.
"""

from __future__ import annotations

import os
import random
import threading
import time

import serving  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow)

# isort: split
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2


class RequestLogger:
    """Thread-safe, sampled writer of Predict requests and responses."""

    def __init__(self, directory: str, sampling_rate: float = 1.0, records_per_file: int = 10_000,
                 prefix: str = "prediction_log"):  # fmt: skip
        if not 0.0 <= sampling_rate <= 1.0:
            raise ValueError(f"sampling rate must be in [0, 1], got {sampling_rate}")
        self.directory = directory
        self.sampling_rate = sampling_rate
        self.records_per_file = records_per_file
        self.prefix = prefix
        self._lock = threading.Lock()
        self._writer: tf.io.TFRecordWriter | None = None
        self._in_file = 0
        self._files = 0
        os.makedirs(directory, exist_ok=True)

    def log_predict(self, request: predict_pb2.PredictRequest, response: predict_pb2.PredictResponse) -> bool:
        """Log one exchange if sampled; return whether it was written."""
        if self.sampling_rate < 1.0 and random.random() >= self.sampling_rate:
            return False
        record = prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request, response=response)
        )
        record.log_metadata.model_spec.CopyFrom(response.model_spec)
        data = record.SerializeToString()
        with self._lock:
            if self._writer is None or self._in_file >= self.records_per_file:
                self._rotate()
            self._writer.write(data)
            self._writer.flush()
            self._in_file += 1
        return True

    def _rotate(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._files += 1
        name = f"{self.prefix}-{int(time.time() * 1000)}-{self._files:05d}.tfrecord"
        self._writer = tf.io.TFRecordWriter(os.path.join(self.directory, name))
        self._in_file = 0

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
