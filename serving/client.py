"""A client for any TF Serving gRPC endpoint (this project's server or real TF Serving).

`ServingClient` is the Python API; `fmnist predict`, `fmnist status` and
`fmnist metadata` are thin layers over it. Images are sent to the
`predict_images` signature as uint8 [batch, 28, 28]; serialized `tf.Example`s
to `serving_default` (Predict) or to `classify` (Classify). A version is chosen
by number or by label (labels come from the server's models.config).

Errors: the server unreachable (after `retries`) is `ServingError` (exit code
1); a request the server refuses (unknown model, version or label, an input
that does not fit) is `RequestRefusedError` (exit code 2), with the server's
status and message.
"""

from __future__ import annotations

import dataclasses

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

from core.errors import ConfigError, InputError, ServingError
from core.vocabulary import (
    CLASS_IDS_OUTPUT,
    CLASS_NAMES_OUTPUT,
    CLASSIFY_SIGNATURE,
    EXAMPLES_INPUT,
    IMAGES_INPUT,
    IMAGES_SIGNATURE,
    MODEL_NAME,
    PROBABILITIES_OUTPUT,
    SERVING_SIGNATURE,
)

RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
REFUSED = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
)


class RequestRefusedError(InputError):
    """The server refused the request as invalid; the message carries its status and reason."""


@dataclasses.dataclass
class Prediction:
    class_name: str
    class_id: int
    probability: float
    probabilities: np.ndarray


class ServingClient:
    def __init__(self, address: str = "127.0.0.1:8500", timeout: float = 10.0, retries: int = 2):
        if timeout <= 0:
            raise ConfigError(f"--timeout: must be > 0 seconds, got {timeout}")
        if retries < 0:
            raise ConfigError(f"--retries: must be >= 0, got {retries}")
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
                error = RequestRefusedError if err.code() in REFUSED else ServingError
                raise error(f"{err.code().name}: {err.details()}") from err
        raise AssertionError("every attempt either returned or raised")

    def predict_images(
        self,
        images: np.ndarray,
        model: str = MODEL_NAME,
        version: int | None = None,
        label: str | None = None,
    ) -> tuple[list[Prediction], int]:
        """Classify uint8 images [n, 28, 28]; return one Prediction each and the version that answered."""
        request = predict_pb2.PredictRequest()
        fill_model_spec(request.model_spec, model, IMAGES_SIGNATURE, version, label)
        request.inputs[IMAGES_INPUT].CopyFrom(tf.make_tensor_proto(np.asarray(images, dtype=np.uint8)))
        response = self._call(self._predictions.Predict, request)
        probabilities = tf.make_ndarray(response.outputs[PROBABILITIES_OUTPUT])
        ids = tf.make_ndarray(response.outputs[CLASS_IDS_OUTPUT])
        names = tf.make_ndarray(response.outputs[CLASS_NAMES_OUTPUT])
        predictions = [
            Prediction(n.decode(), int(i), float(p[i]), p)
            for n, i, p in zip(names, ids, probabilities, strict=True)
        ]
        return predictions, response.model_spec.version.value

    def predict_examples(
        self, serialized: list[bytes], model: str = MODEL_NAME, version: int | None = None
    ) -> tuple[np.ndarray, int]:
        """Probabilities [n, 10] for serialized `tf.Example`s (`serving_default`), and the version."""
        request = predict_pb2.PredictRequest()
        fill_model_spec(request.model_spec, model, SERVING_SIGNATURE, version, None)
        request.inputs[EXAMPLES_INPUT].CopyFrom(tf.make_tensor_proto(serialized, dtype=tf.string))
        response = self._call(self._predictions.Predict, request)
        return tf.make_ndarray(response.outputs[PROBABILITIES_OUTPUT]), response.model_spec.version.value

    def classify(
        self,
        examples: list[tf.train.Example],
        model: str = MODEL_NAME,
        version: int | None = None,
        label: str | None = None,
    ) -> tuple[list[dict[str, float]], int]:
        """TF Serving's Classify: per example a {class name: score} map, and the version."""
        request = classification_pb2.ClassificationRequest()
        fill_model_spec(request.model_spec, model, CLASSIFY_SIGNATURE, version, label)
        request.input.example_list.examples.extend(examples)
        response = self._call(self._predictions.Classify, request)
        scores = [{c.label: c.score for c in result.classes} for result in response.result.classifications]
        return scores, response.model_spec.version.value

    def status(self, model: str = MODEL_NAME) -> get_model_status_pb2.GetModelStatusResponse:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = model
        return self._call(self._models.GetModelStatus, request)

    def metadata(self, model: str = MODEL_NAME) -> get_model_metadata_pb2.SignatureDefMap:
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = model
        response = self._call(self._predictions.GetModelMetadata, request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return signature_map


def fill_model_spec(spec, model: str, signature: str, version: int | None, label: str | None) -> None:
    """A ModelSpec naming the model, the signature and at most one of a version and a version label."""
    if version is not None and label:
        raise ConfigError("ask for a version or a version label, not both")
    spec.name = model
    spec.signature_name = signature
    if version is not None:
        spec.version.value = version
    elif label:
        spec.version_label = label
