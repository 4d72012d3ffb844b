"""One loaded model version (a servable, in TF Serving's words): its signatures, and running requests.

Loading replays the version's warmup requests (as TF Serving does), so a
version that cannot answer is never served. Requests are checked against the
signature before anything runs: missing or extra inputs, wrong dtypes or
shapes, empty or oversized batches are `InvalidRequestError`
(INVALID_ARGUMENT); an unknown signature is `ModelNotFoundError`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2

from core.vocabulary import CLASSES_OUTPUT, CLASSIFY_INPUT, CLASSIFY_METHOD, SCORES_OUTPUT, SERVING_SIGNATURE
from serving.export import read_saved_model
from serving.warmup import read_warmup


class ModelNotFoundError(LookupError):
    """No such model, version or signature; maps to gRPC NOT_FOUND."""


class InvalidRequestError(ValueError):
    """The request does not fit the signature; maps to gRPC INVALID_ARGUMENT."""


def check_inputs(signature, request_inputs, max_batch: int) -> dict[str, tf.Tensor]:
    """Convert `inputs` to tensors, refusing missing or extra names, wrong dtypes, shapes, sizes."""
    specs = signature.structured_input_signature[1]
    missing = sorted(set(specs) - set(request_inputs))
    extra = sorted(set(request_inputs) - set(specs))
    if missing or extra:
        raise InvalidRequestError(f"inputs must be {sorted(specs)}; missing {missing}, unexpected {extra}")
    tensors = {}
    for name, spec in specs.items():
        proto = request_inputs[name]
        if proto.dtype != spec.dtype.as_datatype_enum:
            got = tf.dtypes.as_dtype(proto.dtype).name if proto.dtype else "unset"
            raise InvalidRequestError(f"input '{name}' must be {spec.dtype.name}, got {got}")
        try:
            value = tf.make_ndarray(proto)
        except (TypeError, ValueError) as err:
            raise InvalidRequestError(f"input '{name}' is not a readable tensor: {err}") from err
        if not spec.shape.is_compatible_with(value.shape):
            raise InvalidRequestError(f"input '{name}' must have shape {spec.shape}, got {list(value.shape)}")
        if value.ndim and value.shape[0] == 0:
            raise InvalidRequestError(f"input '{name}' holds no examples")
        if value.ndim and value.shape[0] > max_batch:
            raise InvalidRequestError(
                f"input '{name}' holds {value.shape[0]} examples; the limit is {max_batch}"
            )
        tensors[name] = tf.constant(value, dtype=spec.dtype)
    return tensors


@dataclasses.dataclass
class LoadedVersion:
    """One loaded SavedModel version and its signatures."""

    name: str
    version: int
    path: str
    model: Any
    signature_defs: dict[str, meta_graph_pb2.SignatureDef]

    def run(self, signature_name: str, inputs, max_batch: int) -> dict[str, tf.Tensor]:
        """Check `inputs` (a map of TensorProtos) against the signature and run it."""
        signature = self.signature(signature_name)
        return signature(**check_inputs(signature, inputs, max_batch))

    def classify(self, signature_name: str, serialized_examples: list[bytes], max_batch: int):
        """Run a classification signature (TF Serving's `Classify`): `classes` and `scores` [n, k]."""
        signature_def = self.signature_defs.get(signature_name)
        if signature_def is not None and signature_def.method_name != CLASSIFY_METHOD:
            raise InvalidRequestError(
                f"Expected classification signature method_name to be {CLASSIFY_METHOD}. "
                f"Was: {signature_def.method_name} (signature '{signature_name}')"
            )
        if not serialized_examples:
            raise InvalidRequestError("Classify input holds no examples")
        inputs = {CLASSIFY_INPUT: tf.make_tensor_proto(serialized_examples, dtype=tf.string)}
        outputs = self.run(signature_name, inputs, max_batch)
        return outputs[CLASSES_OUTPUT].numpy(), outputs[SCORES_OUTPUT].numpy()

    def signature(self, signature_name: str):
        try:
            return self.model.signatures[signature_name]
        except KeyError:
            raise ModelNotFoundError(
                f"model {self.name} version {self.version} has no signature '{signature_name}'; "
                f"it has {sorted(self.model.signatures)}"
            ) from None


def read_signature_defs(path: str) -> dict[str, meta_graph_pb2.SignatureDef]:
    """The SignatureDefs of a SavedModel, as GetModelMetadata returns them."""
    signatures = read_saved_model(path).meta_graphs[0].signature_def
    return {k: v for k, v in signatures.items() if not k.startswith("__")}


def load_version(name: str, version: int, path: str, max_batch: int = 1024) -> LoadedVersion:
    """Load a SavedModel and replay its warmup requests; any failure means the version is not served."""
    loaded = LoadedVersion(name, version, path, tf.saved_model.load(path), read_signature_defs(path))
    for request in read_warmup(path):
        loaded.run(request.model_spec.signature_name or SERVING_SIGNATURE, request.inputs, max_batch)
    return loaded
