"""What the server reads from a version directory besides the SavedModel itself, in TF Serving's formats.

- `saved_model.pb`, for the SignatureDefs GetModelMetadata returns (with the
  method names TF Serving's Classify and Regress check);
- `assets.extra/tf_serving_warmup_requests`, a TFRecord file of
  `PredictionLog`s that TF Serving replays before it marks a version
  AVAILABLE, so the first real request does not pay for graph initialisation
  (`--enable_model_warmup`, on by default there).

The release side writes both (`release/export.py`, `release/warmup.py`); the
server only reads, so it imports nothing of the release side.
"""

from __future__ import annotations

import os

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from core.vocabulary import SAVED_MODEL_FILE

WARMUP_PATH = os.path.join("assets.extra", "tf_serving_warmup_requests")


def read_saved_model(export_dir: str) -> saved_model_pb2.SavedModel:
    """The `saved_model.pb` of an export directory (any TensorFlow filesystem)."""
    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(os.path.join(export_dir, SAVED_MODEL_FILE), "rb") as f:
        saved_model.ParseFromString(f.read())
    return saved_model


def read_warmup(model_dir: str) -> list[predict_pb2.PredictRequest]:
    """The Predict requests of a version's warmup file (none if it has no file)."""
    path = os.path.join(model_dir, WARMUP_PATH)
    if not tf.io.gfile.exists(path):
        return []
    requests = []
    for record in tf.data.TFRecordDataset(path):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        if log.HasField("predict_log"):
            requests.append(log.predict_log.request)
    return requests
