"""TF Serving warmup requests: written with the exported model, replayed before a version serves.

TF Serving reads `<version>/assets.extra/tf_serving_warmup_requests`, a TFRecord
file of `PredictionLog`s, and runs them before it marks a version AVAILABLE, so
the first real request does not pay for graph initialisation. The Trainer writes
the file into the model it exports (and the Pusher copies it with the model);
`serving.model_store` replays it the same way TF Serving does.
"""

from __future__ import annotations

import os

import serving  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow)

# isort: split
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from components.features import IMAGE_HEIGHT, IMAGE_KEY, IMAGE_WIDTH, PIXELS

WARMUP_PATH = os.path.join("assets.extra", "tf_serving_warmup_requests")


def warmup_requests(model_name: str = "fashion_mnist") -> list[prediction_log_pb2.PredictionLog]:
    """One request per signature and batch size worth compiling for (1 and 32 images)."""
    logs = []
    for batch in (1, 32):
        images = predict_pb2.PredictRequest()
        images.model_spec.name = model_name
        images.model_spec.signature_name = "predict_images"
        images.inputs["images"].CopyFrom(
            tf.make_tensor_proto(np.zeros((batch, IMAGE_HEIGHT, IMAGE_WIDTH), np.uint8))
        )
        examples = predict_pb2.PredictRequest()
        examples.model_spec.name = model_name
        examples.model_spec.signature_name = "serving_default"
        blank = tf.train.Example()
        blank.features.feature[IMAGE_KEY].int64_list.value.extend([0] * PIXELS)
        examples.inputs["examples"].CopyFrom(tf.make_tensor_proto([blank.SerializeToString()] * batch))
        for request in (images, examples):
            logs.append(
                prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            )
    return logs


def write_warmup(model_dir: str) -> str:
    """Write the warmup file into an exported SavedModel directory; return its path."""
    path = os.path.join(model_dir, WARMUP_PATH)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for log in warmup_requests():
            writer.write(log.SerializeToString())
    return path


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
