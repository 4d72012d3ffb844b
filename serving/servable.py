"""One loaded model version (a servable, in TF Serving's words): its signatures and TF Serving's APIs on it.

Loading replays the version's warmup requests (as TF Serving does), so a
version that cannot answer is never served. Each API follows TF Serving's
implementation (`tensorflow_serving/servables/tensorflow/predict_util.cc`,
`classifier.cc`, `regressor.cc`, `multi_inference.cc`), with its status codes:

- Predict: any signature whose method is predict, classify or regress; an
  unknown signature is FAILED_PRECONDITION; missing or extra inputs, an
  unknown or repeated `output_filter` alias are INVALID_ARGUMENT, and so is
  an input whose dtype or shape does not fit the signature's `TensorInfo`
  (checked from the tensor's header, before any value is read).
- Classify: a signature whose method is classify, input `inputs` (serialized
  `tf.Example`s), outputs `classes` and/or `scores`: a signature with scores
  only gives classes with empty labels, one with classes only gives no
  scores. Regress: method regress, output `outputs` [batch] or [batch, 1].
  Unknown signatures are INVALID_ARGUMENT for both.

Errors the model raises while running keep TensorFlow's status code, with a
one-line message (no "Graph execution error" preamble, no node dumps); a
message TensorFlow cannot even decode (non-UTF-8 bytes in a serialized
example) is INVALID_ARGUMENT, not UNKNOWN.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2

from core.vocabulary import (
    CLASSES_OUTPUT,
    CLASSIFY_INPUT,
    CLASSIFY_METHOD,
    PREDICT_METHOD,
    REGRESS_METHOD,
    REGRESS_OUTPUT,
    SCORES_OUTPUT,
    SERVING_SIGNATURE,
)
from serving.tensors import TensorError, checked_dims, dtype_name, fits_signature, shape_text, values_of
from serving.version_files import read_saved_model, read_warmup

# tensorflow::error::Code values, which gRPC's status codes share.
_STATUS_NAMES = {
    1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED", 5: "NOT_FOUND",
    6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED", 9: "FAILED_PRECONDITION",
    10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED", 13: "INTERNAL", 14: "UNAVAILABLE",
    15: "DATA_LOSS", 16: "UNAUTHENTICATED",
}  # fmt: skip


class ServingStatusError(Exception):
    """A request TF Serving would answer with a non-OK status; `code` is the status name (gRPC's)."""

    code = "UNKNOWN"

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code


class InvalidRequestError(ServingStatusError):
    code = "INVALID_ARGUMENT"


class ModelNotFoundError(ServingStatusError):
    code = "NOT_FOUND"


class FailedPreconditionError(ServingStatusError):
    code = "FAILED_PRECONDITION"


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one request may carry: examples per request and bytes per input tensor."""

    max_batch: int = 1024
    max_bytes: int = 64 * 2**20


def check_example_count(count: int, limits: Limits) -> None:
    """Classify and Regress inputs: at least one example (TF Serving's `util.cc`), at most the limit."""
    if not count:
        raise InvalidRequestError("Input is empty.")
    if count > limits.max_batch:
        raise InvalidRequestError(f"the request holds {count} examples; the limit is {limits.max_batch}")


_NOISE = re.compile(r"\s*\[\[\{\{node [^}]*\}\}\]\]|\s*\[Op:[^\]]*\]( name:)?|<stack traces unavailable>\s*")


def concise(message: str) -> str:
    """TensorFlow's error message in one line: no preamble, stack of node definitions or node dumps."""
    kept = []
    for line in message.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("Graph execution error", "Detected at node", "File ")):
            continue
        if line.startswith((" ", "\t")) and not stripped.startswith(("[[", "[Op")):
            continue  # the indented stack of where the node was defined
        kept.append(_NOISE.sub("", stripped))
    return " ".join(k for k in kept if k)[:500] or "the model failed on this input"


# TensorFlow's message quotes the bad input's bytes, which are not always UTF-8: Python cannot even read it.
UNDECODABLE = "Could not parse the input: TensorFlow refused it with a message that is not UTF-8"

Runner = Callable[["LoadedVersion", str, dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclasses.dataclass
class LoadedVersion:
    """One loaded SavedModel version: its signature functions and SignatureDefs."""

    name: str
    version: int
    path: str
    model: Any
    signature_defs: dict[str, meta_graph_pb2.SignatureDef]

    # --- running a signature ----------------------------------------------------------------
    def run(self, signature_name: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Call a signature on numpy inputs; TensorFlow's failures become status errors."""
        function = self.model.signatures[signature_name]
        signature_def = self.signature_defs[signature_name]
        tensors = {}
        for key, array in arrays.items():
            dtype = tf.dtypes.as_dtype(signature_def.inputs[key].dtype)
            tensors[key] = tf.constant(array, dtype=dtype)
        try:
            outputs = function(**tensors)
        except UnicodeDecodeError:
            raise InvalidRequestError(UNDECODABLE) from None
        except tf.errors.OpError as err:
            raise ServingStatusError(
                concise(err.message), _STATUS_NAMES.get(err.error_code, "UNKNOWN")
            ) from None
        except (TypeError, ValueError) as err:  # the function's own input signature refused the tensors
            if "codec can't decode" in str(err):  # TensorFlow wraps the UnicodeDecodeError of its message
                raise InvalidRequestError(UNDECODABLE) from None
            raise InvalidRequestError(concise(str(err))) from None
        return {key: value.numpy() for key, value in outputs.items()}

    def signature_def(
        self, name: str, missing: Callable[[str], ServingStatusError]
    ) -> meta_graph_pb2.SignatureDef:
        found = self.signature_defs.get(name)
        if found is None or name not in self.model.signatures:
            raise missing(name)
        return found

    # --- TF Serving's APIs ---------------------------------------------------------------------
    def predict(
        self, signature_name: str, inputs, output_filter, limits: Limits, run: Runner | None = None
    ) -> dict[str, np.ndarray]:
        """Predict: `inputs` maps input names to TensorProtos; the outputs asked for (all by default)."""
        signature = self.signature_def(
            signature_name,
            lambda n: FailedPreconditionError(f'Serving signature key "{n}" not found.'),
        )
        if signature.method_name not in (PREDICT_METHOD, CLASSIFY_METHOD, REGRESS_METHOD):
            raise ServingStatusError(
                f"Expected prediction signature method_name to be one of {{{PREDICT_METHOD}, "
                f"{CLASSIFY_METHOD}, {REGRESS_METHOD}}}. Was: {signature.method_name}",
                "INTERNAL",
            )
        expected, sent = set(signature.inputs), set(inputs)
        if sent != expected:
            raise InvalidRequestError(
                f"input size does not match signature: {len(sent)}!={len(expected)} "
                f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}}). "
                f"Sent extra: {{{','.join(sorted(sent - expected))}}}. "
                f"Missing but required: {{{','.join(sorted(expected - sent))}}}."
            )
        seen = set()
        for alias in output_filter:
            if alias not in signature.outputs:
                raise InvalidRequestError(
                    f"output tensor alias not found in signature: {alias} Outputs expected to be in the set "
                    f"{{{','.join(sorted(signature.outputs))}}}."
                )
            if alias in seen:
                raise InvalidRequestError(f"duplicate output tensor alias: {alias}")
            seen.add(alias)
        dims = {
            key: self._input_dims(signature_name, signature, key, inputs[key], limits)
            for key in sorted(expected)
        }
        arrays = {key: read_values(inputs[key], key, shape) for key, shape in dims.items()}
        outputs = (run or LoadedVersion.run)(self, signature_name, arrays)
        return {alias: outputs[alias] for alias in (output_filter or outputs)}

    def _input_dims(
        self, signature_name: str, signature: meta_graph_pb2.SignatureDef, key: str, proto, limits: Limits
    ) -> list[int]:
        """An input's dimensions, once its header passed every check; no value has been read yet.

        Size and batch limits first, then the signature's dtype, then its shape
        (`serving.tensors.fits_signature`): a tensor the model would reshape
        into more examples than it declares ([1, 28, 28*K] for [-1, 28, 28]) is
        refused here, at no cost. The shape error is INVALID_ARGUMENT with the
        message of TensorFlow's `CheckInputSpecs`
        (tensorflow/core/tfrt/saved_model/saved_model.cc), which TF Serving runs
        when `validate_input_specs` is set (tfrt_saved_model_source_adapter.proto:166,
        tfrt_servable.cc:99).
        """
        try:
            dims = checked_dims(proto, key, limits.max_batch, limits.max_bytes)
        except TensorError as err:
            raise InvalidRequestError(str(err)) from None
        if dims and dims[0] == 0:
            raise InvalidRequestError(f"input '{key}' holds no examples")
        declared = signature.inputs[key]
        if proto.dtype != declared.dtype:
            raise InvalidRequestError(
                f"input '{key}' must be {dtype_name(declared.dtype)}, got {dtype_name(proto.dtype)}"
            )
        if not fits_signature(dims, declared.tensor_shape):
            expected = (
                [] if declared.tensor_shape.unknown_rank else [d.size for d in declared.tensor_shape.dim]
            )
            raise InvalidRequestError(
                f"model: {self.name}, version: {self.version}, error: signature {signature_name} input "
                f"'{key}' shape is wrong, expected : {shape_text(expected)}, actual: {shape_text(dims)}"
            )
        return dims

    def _example_signature(self, name: str, method: str, kind: str) -> meta_graph_pb2.SignatureDef:
        signature = self.signature_def(
            name, lambda n: InvalidRequestError(f"No signature was found with the name: {n}")
        )
        if signature.method_name != method:
            raise InvalidRequestError(
                f"Expected {kind} signature method_name to be {method}. Was: {signature.method_name}"
            )
        if CLASSIFY_INPUT not in signature.inputs or len(signature.inputs) != 1:
            raise InvalidRequestError(f"Expected one input Tensor named '{CLASSIFY_INPUT}'.")
        return signature

    def _run_examples(
        self, name: str, serialized: list[bytes], limits: Limits, run: Runner | None
    ) -> dict[str, np.ndarray]:
        check_example_count(len(serialized), limits)
        return (run or LoadedVersion.run)(self, name, {CLASSIFY_INPUT: np.array(serialized, dtype=object)})

    def classify(
        self, signature_name: str, serialized: list[bytes], limits: Limits, run: Runner | None = None
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Classify: per example the class labels (or None) and scores (or None), [n, num_classes]."""
        signature = self._example_signature(signature_name, CLASSIFY_METHOD, "classification")
        if not {CLASSES_OUTPUT, SCORES_OUTPUT} & set(signature.outputs):
            raise InvalidRequestError(
                'Expected classification signature outputs to contain at least one of "classes" or "scores".'
            )
        outputs = self._run_examples(signature_name, serialized, limits, run)
        classes, scores = outputs.get(CLASSES_OUTPUT), outputs.get(SCORES_OUTPUT)
        for what, tensor in (("classes", classes), ("scores", scores)):
            if tensor is not None and (tensor.ndim != 2 or tensor.shape[0] != len(serialized)):
                raise InvalidRequestError(
                    f"Expected {what} Tensor shape: [batch_size num_classes] but got {list(tensor.shape)}"
                )
        if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
            raise InvalidRequestError(
                "Tensors class and score should match in dim_size(1). "
                f"Got {classes.shape[1]} vs. {scores.shape[1]}"
            )
        return classes, scores

    def regress(
        self, signature_name: str, serialized: list[bytes], limits: Limits, run: Runner | None = None
    ) -> np.ndarray:
        """Regress: one value per example."""
        signature = self._example_signature(signature_name, REGRESS_METHOD, "regression")
        if REGRESS_OUTPUT not in signature.outputs:
            raise InvalidRequestError(
                f"No regression outputs found in SignatureDef: expected '{REGRESS_OUTPUT}'"
            )
        values = self._run_examples(signature_name, serialized, limits, run)[REGRESS_OUTPUT]
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        if values.ndim != 1 or len(values) != len(serialized):
            raise InvalidRequestError(
                "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] "
                f"but got {list(values.shape)}"
            )
        return values


def read_values(proto, name: str, dims: list[int]) -> np.ndarray:
    """A request tensor's values as numpy, once `LoadedVersion._input_dims` accepted its header."""
    try:
        return values_of(proto, name, dims)
    except TensorError as err:
        raise InvalidRequestError(str(err)) from None


def read_signature_defs(path: str) -> dict[str, meta_graph_pb2.SignatureDef]:
    """The SignatureDefs of a SavedModel, as GetModelMetadata returns them."""
    signatures = read_saved_model(path).meta_graphs[0].signature_def
    return {k: v for k, v in signatures.items() if not k.startswith("__")}


def load_version(name: str, version: int, path: str) -> LoadedVersion:
    """Load a SavedModel and replay its warmup requests; any failure means the version is not served."""
    loaded = LoadedVersion(name, version, path, tf.saved_model.load(path), read_signature_defs(path))
    for request in read_warmup(path):
        loaded.predict(request.model_spec.signature_name or SERVING_SIGNATURE, request.inputs, [], Limits())
    return loaded
