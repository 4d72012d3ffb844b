"""A TensorFlow Serving gRPC server for the pushed models (`fmnist serve`).

It implements TF Serving's own protocol (the `tensorflow-serving-api` protos),
so any TF Serving client works unchanged against it, and this project's client
works unchanged against real TF Serving:

- PredictionService.Predict: `model_spec` (name; optional version or version
  label; signature name, default `serving_default`), `inputs` by the
  signature's input names, optional `output_filter`. Answers with the outputs
  and the model_spec (including the version that produced them).
- PredictionService.Classify: `tf.Example`s (`example_list`, or
  `example_list_with_context`) through a signature whose method is
  `tensorflow/serving/classify` (the model's `classify`); class names and scores.
- PredictionService.GetModelMetadata: the `signature_def` map.
- ModelService.GetModelStatus: every known version with TF Serving's states.

Errors as TF Serving gives them: unknown model, version or signature ->
NOT_FOUND; unknown version label, missing input, wrong dtype or shape, too many
examples -> INVALID_ARGUMENT. A bad request never takes the server down.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
import tensorflow as tf
from google.protobuf import any_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    status_pb2,
)

from core.config import ServingConfig
from core.vocabulary import SERVING_SIGNATURE
from serving.request_log import RequestLogger
from serving.servable import InvalidRequestError, LoadedVersion, ModelNotFoundError
from serving.version_manager import VersionManager

UNKNOWN_ERROR = 2  # tensorflow.error.Code.UNKNOWN, what a failed load reports


@contextlib.contextmanager
def grpc_errors(context) -> Iterator[None]:
    """Answer the store's and the model's errors with TF Serving's status codes (the server keeps serving).

    Unknown model, version or signature -> NOT_FOUND; a request that does not fit
    (unknown label, wrong input, unparseable tf.Example bytes) -> INVALID_ARGUMENT.
    """
    try:
        yield
    except ModelNotFoundError as err:
        context.abort(grpc.StatusCode.NOT_FOUND, str(err))
    except InvalidRequestError as err:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
    except tf.errors.InvalidArgumentError as err:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, err.message)


def message_size_options(max_message_mb: int) -> list[tuple[str, int]]:
    """gRPC options raising both message limits to `max_message_mb` (a batch of images is large)."""
    limit = max_message_mb * 2**20
    return [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]


def _spec_version(model_spec) -> int | None:
    return model_spec.version.value if model_spec.HasField("version") else None


def _spec_label(model_spec) -> str | None:
    return model_spec.version_label if model_spec.HasField("version_label") else None


def examples_of(model_input) -> list[bytes]:
    """Serialized examples of a `tensorflow.serving.Input`; context features go into each example."""
    kind = model_input.WhichOneof("kind")
    if kind == "example_list":
        return [e.SerializeToString() for e in model_input.example_list.examples]
    if kind == "example_list_with_context":
        with_context = model_input.example_list_with_context
        merged = []
        for example in with_context.examples:
            combined = tf.train.Example()
            combined.CopyFrom(with_context.context)
            for key, feature in example.features.feature.items():  # the example's own value wins
                combined.features.feature[key].CopyFrom(feature)
            merged.append(combined.SerializeToString())
        return merged
    return []


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(
        self, store: VersionManager, config: ServingConfig, request_logger: RequestLogger | None = None
    ):
        self.store = store
        self.config = config
        self.request_logger = request_logger

    def _resolve(self, model_spec, context) -> LoadedVersion:
        with grpc_errors(context):
            return self.store.resolve(model_spec.name, _spec_version(model_spec), _spec_label(model_spec))

    @staticmethod
    def _fill_spec(response_spec, loaded: LoadedVersion, signature_name: str) -> None:
        response_spec.name = loaded.name
        response_spec.version.value = loaded.version
        response_spec.signature_name = signature_name

    def Predict(self, request: predict_pb2.PredictRequest, context) -> predict_pb2.PredictResponse:
        loaded = self._resolve(request.model_spec, context)
        signature_name = request.model_spec.signature_name or SERVING_SIGNATURE
        with grpc_errors(context):
            outputs = loaded.run(signature_name, request.inputs, self.config.max_batch)
        unknown = sorted(set(request.output_filter) - set(outputs))
        if unknown:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"output_filter names unknown outputs {unknown}")
        response = predict_pb2.PredictResponse()
        self._fill_spec(response.model_spec, loaded, signature_name)
        for key in request.output_filter or outputs:
            response.outputs[key].CopyFrom(tf.make_tensor_proto(outputs[key].numpy()))
        if self.request_logger is not None:
            self.request_logger.log_predict(request, response)
        return response

    def Classify(self, request, context) -> classification_pb2.ClassificationResponse:
        loaded = self._resolve(request.model_spec, context)
        signature_name = request.model_spec.signature_name or SERVING_SIGNATURE
        with grpc_errors(context):
            classes, scores = loaded.classify(
                signature_name, examples_of(request.input), self.config.max_batch
            )
        response = classification_pb2.ClassificationResponse()
        self._fill_spec(response.model_spec, loaded, signature_name)
        for example_classes, example_scores in zip(classes, scores, strict=True):
            classification = response.result.classifications.add()
            for label, score in zip(example_classes, example_scores, strict=True):
                classification.classes.add(label=label.decode(), score=float(score))
        if self.request_logger is not None:
            self.request_logger.log_classify(request, response)
        return response

    def GetModelMetadata(self, request, context):
        unsupported = sorted(set(request.metadata_field) - {"signature_def"})
        if unsupported or not request.metadata_field:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "metadata_field must be ['signature_def']")
        loaded = self._resolve(request.model_spec, context)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, signature_def in loaded.signature_defs.items():
            signature_map.signature_def[key].CopyFrom(signature_def)
        packed = any_pb2.Any()
        packed.Pack(signature_map)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = loaded.name
        response.model_spec.version.value = loaded.version
        response.metadata["signature_def"].CopyFrom(packed)
        return response


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, store: VersionManager):
        self.store = store

    def GetModelStatus(self, request, context):
        spec = request.model_spec
        with grpc_errors(context):
            version = _spec_version(spec)
            if _spec_label(spec):
                version = self.store.resolve(spec.name, label=_spec_label(spec)).version
            states = self.store.status(spec.name, version)
        response = get_model_status_pb2.GetModelStatusResponse()
        for version, state in sorted(states.items()):
            status = response.model_version_status.add(
                version=version, state=get_model_status_pb2.ModelVersionStatus.State.Value(state.state)
            )
            if state.error:
                status.status.CopyFrom(
                    status_pb2.StatusProto(error_code=UNKNOWN_ERROR, error_message=state.error)
                )
        return response


def build_server(store: VersionManager, config: ServingConfig) -> tuple[grpc.Server, int]:
    """A started-able gRPC server with both services; returns it and the bound port."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.workers),
        options=message_size_options(config.max_message_mb),
    )
    logger = (
        RequestLogger(config.request_log_dir, config.request_log_sampling) if config.request_log_dir else None
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(store, config, logger), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(store), server)
    port = server.add_insecure_port(f"{config.host}:{config.port}")
    if port == 0:
        raise OSError(f"cannot bind {config.host}:{config.port} (in use?)")
    return server, port


def make_manager(config: ServingConfig) -> VersionManager:
    """The version manager for `config`: its models.config (re-read when it changes), else its base path."""
    if config.model_config_file:
        return VersionManager(config_file=config.model_config_file, poll_seconds=config.poll_seconds)
    return VersionManager(config.model_base_path, config.poll_seconds)


def serve(config: ServingConfig) -> None:
    """Serve until SIGTERM or SIGINT; in-flight requests get up to 10 s to finish."""
    store = make_manager(config)
    store.start()
    server, port = build_server(store, config)
    server.start()
    print(f"serving {store.model_names() or 'no models yet'} from {store.where} on {config.host}:{port}")
    run_until_terminated(server)
    store.stop()


def run_until_terminated(server: grpc.Server, grace_seconds: float = 10.0) -> None:
    """Block until SIGTERM or SIGINT, then stop `server`, giving in-flight requests `grace_seconds`."""
    stopped = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()
    server.stop(grace=grace_seconds).wait()
