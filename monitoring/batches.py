"""The batch to check for drift, from whatever the user has: logs, examples, arrays, images.

- a directory of TF Serving request logs (`PredictionLog` TFRecords, from
  `fmnist serve --request-log-dir` or any logger writing that format): the
  images of each logged Predict request (`images` uint8 or serialized
  `examples`) and, when logged, the model's answers (`probabilities`);
- a directory of PNG/JPEG images, or of TFRecords of the project's examples
  (`fmnist data prepare` output, or an ExampleGen split directory);
- one file: TFRecords of the project's examples, an IDX images file, a `.npy`
  array, a PNG/JPEG, or a request-log TFRecord file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import monitoring  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow)

# isort: split
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from components.dataset import parse_example_pixels
from components.dataset import read_example_images as examples_images
from components.features import IMAGE_HEIGHT, IMAGE_WIDTH
from serving.client import load_images

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclasses.dataclass
class Batch:
    """Images [n, 28, 28] uint8, the model's probabilities [n, 10] when known, and where they came from."""

    images: np.ndarray
    source: str
    probabilities: np.ndarray | None = None


def _log_images(request, where: str) -> np.ndarray:
    if "images" in request.inputs:
        return (
            tf.make_ndarray(request.inputs["images"]).astype(np.uint8).reshape(-1, IMAGE_HEIGHT, IMAGE_WIDTH)
        )
    if "examples" in request.inputs:
        serialized = tf.make_ndarray(request.inputs["examples"]).reshape(-1)
        pixels = parse_example_pixels(serialized)
        return np.clip(pixels, 0, 255).astype(np.uint8).reshape(-1, IMAGE_HEIGHT, IMAGE_WIDTH)
    raise ValueError(f"{where}: a logged request has neither 'images' nor 'examples' inputs")


def read_request_logs(files: list[Path]) -> Batch:
    """Images (and logged probabilities) of every Predict request in PredictionLog TFRecord files."""
    images, probabilities, all_answered = [], [], True
    for file in files:
        try:
            records = [r.numpy() for r in tf.data.TFRecordDataset(str(file))]
        except tf.errors.OpError as err:
            raise ValueError(f"{file}: not a TFRecord file of PredictionLog records: {err.message}") from err
        for record in records:
            log = prediction_log_pb2.PredictionLog.FromString(record)
            if not log.HasField("predict_log"):
                continue
            batch = _log_images(log.predict_log.request, str(file))
            images.append(batch)
            outputs = log.predict_log.response.outputs
            if "probabilities" in outputs:
                probabilities.append(tf.make_ndarray(outputs["probabilities"]).reshape(len(batch), -1))
            else:
                all_answered = False
    if not images:
        raise ValueError(f"{', '.join(map(str, files))}: no logged Predict requests")
    return Batch(
        np.concatenate(images),
        ", ".join(str(f) for f in files),
        np.concatenate(probabilities) if all_answered and probabilities else None,
    )


def _is_request_log(file: Path) -> bool:
    """A TFRecord whose first record parses as a PredictionLog with a Predict request."""
    try:
        first = next(iter(tf.data.TFRecordDataset(str(file)).take(1)), None)
    except tf.errors.OpError:
        return False
    if first is None:
        return False
    try:
        return prediction_log_pb2.PredictionLog.FromString(first.numpy()).HasField("predict_log")
    except Exception:  # protobuf DecodeError: some other record type
        return False


def load_batch(path: str) -> Batch:
    """The batch at `path` (see the module docstring); errors name the path and what was wrong."""
    location = Path(path)
    if not location.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    if location.is_dir():
        files = sorted(f for f in location.iterdir() if f.is_file() and not f.name.startswith("."))
        logs = [f for f in files if f.suffix == ".tfrecord" and _is_request_log(f)]
        if logs:
            return read_request_logs(logs)
        pictures = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES]
        if pictures:
            return Batch(np.concatenate([load_images(str(f)) for f in pictures]), path)
        records = [f for f in files if ".tfrecord" in f.name or f.name.startswith("data_tfrecord")]
        if records:
            return Batch(examples_images(records), path)
        raise ValueError(f"{path}: holds no request logs, TFRecords of examples or PNG/JPEG images")
    if location.suffix == ".tfrecord" and _is_request_log(location):
        return read_request_logs([location])
    images = load_images(path)
    if len(images) == 0:
        raise ValueError(f"{path}: holds no images")
    return Batch(images, path)
