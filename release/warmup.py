"""TF Serving warmup requests: written with the exported model, replayed before a version serves.

TF Serving reads `<version>/assets.extra/tf_serving_warmup_requests`, a TFRecord
file of `PredictionLog`s, and runs them before it marks a version AVAILABLE, so
the first real request does not pay for graph initialisation. The Trainer writes
the file into the model it exports (and the Pusher copies it with the model);
the server reads it (`serving/version_files.py`) and replays it the same way TF Serving does.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from core.examples import serialize_example
from core.vocabulary import (
    EXAMPLES_INPUT,
    IMAGE_HEIGHT,
    IMAGE_WIDTH,
    IMAGES_INPUT,
    IMAGES_SIGNATURE,
    MODEL_NAME,
    SERVING_SIGNATURE,
)
from serving.version_files import WARMUP_PATH

WARMUP_BATCHES = (1, 32)  # the batch sizes worth compiling for before the first request


def warmup_requests(model_name: str = MODEL_NAME) -> list[prediction_log_pb2.PredictionLog]:
    """One request per Predict signature and batch size of `WARMUP_BATCHES`, of blank images."""
    logs = []
    for batch in WARMUP_BATCHES:
        blank = np.zeros((batch, IMAGE_HEIGHT, IMAGE_WIDTH), np.uint8)
        images = predict_pb2.PredictRequest()
        images.model_spec.name = model_name
        images.model_spec.signature_name = IMAGES_SIGNATURE
        images.inputs[IMAGES_INPUT].CopyFrom(tf.make_tensor_proto(blank))
        examples = predict_pb2.PredictRequest()
        examples.model_spec.name = model_name
        examples.model_spec.signature_name = SERVING_SIGNATURE
        examples.inputs[EXAMPLES_INPUT].CopyFrom(
            tf.make_tensor_proto([serialize_example(image) for image in blank])
        )
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
