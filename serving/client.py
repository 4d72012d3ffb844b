"""A client for any TF Serving gRPC endpoint (this project's server or real TF Serving).

`ServingClient` is the Python API; `fmnist predict`, `fmnist status` and
`fmnist metadata` are thin layers over it. Images are sent to the
`predict_images` signature as uint8 [batch, 28, 28]; serialized `tf.Example`s
to `serving_default` (Predict) or to `classify` (Classify). A version is chosen
by number or by label (labels come from the server's models.config).
"""

from __future__ import annotations

import dataclasses
import gzip
import zlib
from pathlib import Path

import serving  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow)

# isort: split
import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from components import dataset, idx
from components.features import IMAGE_HEIGHT, IMAGE_WIDTH

IMAGES_SIGNATURE = "predict_images"
EXAMPLES_SIGNATURE = "serving_default"
CLASSIFY_SIGNATURE = "classify"
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class ServingError(RuntimeError):
    """The server is unreachable or answered with an error; the message says which."""


@dataclasses.dataclass
class Prediction:
    class_name: str
    class_id: int
    probability: float
    probabilities: np.ndarray


class ServingClient:
    def __init__(self, address: str = "127.0.0.1:8500", timeout: float = 10.0, retries: int = 2):
        self.address = address
        self.timeout = timeout
        self.retries = retries
        self._channel = grpc.insecure_channel(address)
        self._predictions = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def _call(self, method, request):
        for attempt in range(self.retries + 1):
            try:
                return method(request, timeout=self.timeout)
            except grpc.RpcError as err:
                if err.code() in RETRYABLE and attempt < self.retries:
                    continue
                if err.code() == grpc.StatusCode.UNAVAILABLE:
                    raise ServingError(f"no TF Serving server answers at {self.address}") from err
                raise ServingError(f"{err.code().name}: {err.details()}") from err
        raise AssertionError("unreachable")

    def predict_images(
        self,
        images: np.ndarray,
        model: str = "fashion_mnist",
        version: int | None = None,
        label: str | None = None,
    ) -> tuple[list[Prediction], int]:
        """Classify uint8 images [n, 28, 28]; return one Prediction each and the version that answered."""
        request = predict_pb2.PredictRequest()
        _fill_spec(request.model_spec, model, IMAGES_SIGNATURE, version, label)
        request.inputs["images"].CopyFrom(tf.make_tensor_proto(np.asarray(images, dtype=np.uint8)))
        response = self._call(self._predictions.Predict, request)
        probabilities = tf.make_ndarray(response.outputs["probabilities"])
        ids = tf.make_ndarray(response.outputs["class_ids"])
        names = tf.make_ndarray(response.outputs["class_names"])
        predictions = [
            Prediction(n.decode(), int(i), float(p[i]), p)
            for n, i, p in zip(names, ids, probabilities, strict=True)
        ]
        return predictions, response.model_spec.version.value

    def predict_examples(
        self, serialized: list[bytes], model: str = "fashion_mnist", version: int | None = None
    ) -> tuple[np.ndarray, int]:
        """Probabilities [n, 10] for serialized `tf.Example`s (`serving_default`), and the version."""
        request = predict_pb2.PredictRequest()
        _fill_spec(request.model_spec, model, EXAMPLES_SIGNATURE, version, None)
        request.inputs["examples"].CopyFrom(tf.make_tensor_proto(serialized, dtype=tf.string))
        response = self._call(self._predictions.Predict, request)
        return tf.make_ndarray(response.outputs["probabilities"]), response.model_spec.version.value

    def classify(
        self,
        examples: list[tf.train.Example],
        model: str = "fashion_mnist",
        version: int | None = None,
        label: str | None = None,
    ) -> tuple[list[dict[str, float]], int]:
        """TF Serving's Classify: per example a {class name: score} map, and the version."""
        request = classification_pb2.ClassificationRequest()
        _fill_spec(request.model_spec, model, CLASSIFY_SIGNATURE, version, label)
        request.input.example_list.examples.extend(examples)
        response = self._call(self._predictions.Classify, request)
        scores = [{c.label: c.score for c in result.classes} for result in response.result.classifications]
        return scores, response.model_spec.version.value

    def status(self, model: str = "fashion_mnist") -> get_model_status_pb2.GetModelStatusResponse:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = model
        return self._call(self._models.GetModelStatus, request)

    def metadata(self, model: str = "fashion_mnist") -> get_model_metadata_pb2.SignatureDefMap:
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = model
        response = self._call(self._predictions.GetModelMetadata, request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return signature_map


def _fill_spec(spec, model: str, signature: str, version: int | None, label: str | None) -> None:
    if version is not None and label:
        raise ValueError("ask for a version or a version label, not both")
    spec.name = model
    spec.signature_name = signature
    if version is not None:
        spec.version.value = version
    elif label:
        spec.version_label = label


def _as_uint8_images(array: np.ndarray, source: Path) -> np.ndarray:
    """uint8 [n, 28, 28] from pixel values that must already lie in 0..255."""
    if array.size == 0:
        raise ValueError(f"{source}: holds no images")
    if array.min() < 0 or array.max() > 255:
        raise ValueError(f"{source}: pixel values outside 0..255")
    return array.astype(np.uint8).reshape(-1, IMAGE_HEIGHT, IMAGE_WIDTH)


def load_images(path: str) -> np.ndarray:
    """Images as uint8 [n, 28, 28] from a PNG/JPEG, a .npy array, TFRecords of the project's
    examples (`.tfrecord`, `.tfrecord.gz`) or an IDX images file (.gz or not)."""
    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(f"{path}: no such file")
    suffix = file.suffix.lower()
    if ".tfrecord" in file.name.lower():
        return dataset.read_example_images([file])
    try:
        if suffix in (".png", ".jpg", ".jpeg"):
            from PIL import Image

            with Image.open(file) as image:
                grey = image.convert("L").resize((IMAGE_WIDTH, IMAGE_HEIGHT))
            return np.asarray(grey, dtype=np.uint8)[None]
        if suffix == ".npy":
            array = np.load(file)
            if array.shape[-2:] != (IMAGE_HEIGHT, IMAGE_WIDTH) or array.ndim not in (2, 3):
                raise ValueError(f"{path}: array of shape {array.shape}; expected [n, 28, 28] or [28, 28]")
            return _as_uint8_images(array, file)
        data = file.read_bytes()
        return idx.parse_images(gzip.decompress(data) if suffix == ".gz" else data, str(file))
    except (OSError, EOFError, zlib.error) as err:  # unreadable image, .npy or gzip data
        raise ValueError(f"{path}: cannot be read as {suffix or 'IDX'} images: {err}") from err
