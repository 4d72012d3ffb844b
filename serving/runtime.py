"""What the gRPC and REST front ends share: the version manager, limits, batching, metrics and request logs.

Both front ends turn a request into calls on `ServingRuntime` and its answers
into their wire format, so gRPC and REST give the same results and the same
status codes (REST maps them to HTTP as TF Serving's `http_server.cc` does).

A request naming no version is routed by the traffic split first
(`serving/traffic_split.py`); every request a version answers is counted for
that version (`ServingMetrics.answering`), and with request logging on, the
probabilities it answered feed the version's accuracy estimate
(`serving/accuracy_window.py`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time

import numpy as np
import tensorflow as tf
from google.protobuf import any_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_pb2,
    predict_pb2,
    regression_pb2,
    status_pb2,
)

from core.config import ServingConfig
from core.vocabulary import CLASSIFY_METHOD, PROBABILITIES_OUTPUT, REGRESS_METHOD, SERVING_SIGNATURE
from serving.accuracy_window import AccuracyWindows
from serving.batching import BatchingOptions, BatchScheduler
from serving.calls import NO_CALL, Call
from serving.metrics import ServingMetrics
from serving.request_log import RequestLogger
from serving.servable import (
    InvalidRequestError,
    Limits,
    LoadedVersion,
    Runner,
    ServingStatusError,
    check_example_count,
)
from serving.tensors import proto_from_array
from serving.traffic_split import TrafficSplit, label_of, names_no_version
from serving.version_manager import VersionManager

UNKNOWN_ERROR = 2  # tensorflow.error.Code.UNKNOWN, what a failed load reports


def spec_version(model_spec: model_pb2.ModelSpec) -> int | None:
    return model_spec.version.value if model_spec.HasField("version") else None


def spec_label(model_spec: model_pb2.ModelSpec) -> str | None:
    return model_spec.version_label if model_spec.HasField("version_label") else None


def examples_of(model_input, limits: Limits) -> list[bytes]:
    """Serialized examples of a `tensorflow.serving.Input`; context features go into each example.

    TF Serving merges the context into every example (`InputToSerializedExampleTensor`
    in servables/tensorflow/util.cc:184-198, context bytes then example bytes)
    and has no limit; here the examples are counted, and the merged size (each
    example plus a copy of the context) bounded by the tensor byte limit,
    before anything is merged: a 1 MB context with 1,000 empty examples would
    otherwise cost 1 GB before any check (issue #20). Both refusals are
    INVALID_ARGUMENT, as the example limit's is.
    """
    kind = model_input.WhichOneof("kind")
    if kind == "example_list":
        examples = model_input.example_list.examples
        check_example_count(len(examples), limits)
        return [e.SerializeToString() for e in examples]
    if kind == "example_list_with_context":
        with_context = model_input.example_list_with_context
        check_example_count(len(with_context.examples), limits)
        check_merged_size(with_context, limits)
        return [merged_example(with_context.context, e) for e in with_context.examples]
    raise InvalidRequestError("Input is empty.")


def check_merged_size(with_context, limits: Limits) -> None:
    """Refuse an `example_list_with_context` whose merged examples would exceed the tensor byte limit."""
    examples = with_context.examples
    merged = len(examples) * with_context.context.ByteSize() + sum(e.ByteSize() for e in examples)
    if merged > limits.max_bytes:
        raise InvalidRequestError(
            f"example_list_with_context: {len(examples)} examples with a context of "
            f"{with_context.context.ByteSize()} bytes make {merged} bytes once merged; "
            f"the limit is {limits.max_bytes}"
        )


def merged_example(context: tf.train.Example, example: tf.train.Example) -> bytes:
    """The context's features with the example's own on top (the example's value wins), serialized."""
    combined = tf.train.Example()
    combined.CopyFrom(context)
    for key, feature in example.features.feature.items():
        combined.features.feature[key].CopyFrom(feature)
    return combined.SerializeToString()


def fill_spec(response_spec, loaded: LoadedVersion, signature_name: str) -> None:
    response_spec.name = loaded.name
    response_spec.version.value = loaded.version
    response_spec.signature_name = signature_name


def classification_result(classes, scores, result: classification_pb2.ClassificationResult) -> None:
    """TF Serving's ClassificationResult: per example its classes, with labels and/or scores."""
    rows = len(classes if classes is not None else scores)
    width = (classes if classes is not None else scores).shape[1]
    for i in range(rows):
        classification = result.classifications.add()
        for j in range(width):
            entry = classification.classes.add()
            if classes is not None:
                entry.label = (
                    classes[i, j].decode() if isinstance(classes[i, j], bytes) else str(classes[i, j])
                )
            if scores is not None:
                entry.score = float(scores[i, j])


@dataclasses.dataclass
class ServingRuntime:
    manager: VersionManager
    limits: Limits
    metrics: ServingMetrics
    scheduler: BatchScheduler | None = None
    logger: RequestLogger | None = None
    split: TrafficSplit | None = None  # None: TF Serving's rule, the newest version
    estimates: AccuracyWindows | None = None

    @classmethod
    def from_config(cls, manager: VersionManager, config: ServingConfig) -> ServingRuntime:
        """The runtime `config` asks for; build it before the manager loads (it observes the loads)."""
        scheduler = None
        if config.enable_batching:
            options = (
                BatchingOptions.from_file(config.batching_parameters_file)
                if config.batching_parameters_file
                else BatchingOptions()
            )
            scheduler = BatchScheduler(options)
        logger = (
            RequestLogger(
                config.request_log_dir,
                config.request_log_sampling,
                max_bytes=config.request_log_max_mb * 2**20,
                max_age_seconds=config.request_log_max_days * 86400,
            )
            if config.request_log_dir
            else None
        )
        limits = Limits(max_batch=config.max_batch, max_bytes=config.max_message_mb * 2**20)
        metrics = ServingMetrics(serves=manager.serves)
        manager.observers.append(metrics.observe_version)
        estimates = None
        if logger is not None:
            metrics.watch_request_log(logger)
            if config.estimate_window:
                estimates = AccuracyWindows(config.estimate_window, manager.labels)
                manager.observers.append(estimates.observe_version)
                metrics.registry.register(estimates)
        split = TrafficSplit(config.canary_percent)
        return cls(manager, limits, metrics, scheduler, logger, split, estimates)

    def route(self, model_spec: model_pb2.ModelSpec, call: Call = NO_CALL) -> model_pb2.ModelSpec:
        """The spec to answer: one naming no version gets the label the traffic split chose (if any)."""
        if self.split is None or not names_no_version(model_spec):
            return model_spec
        return self.split.route(model_spec, self.manager.labels(model_spec.name), call.client_id)

    def resolve(self, model_spec: model_pb2.ModelSpec, call: Call = NO_CALL) -> LoadedVersion:
        """The version that answers: the one asked for, else the traffic split's choice, else the newest."""
        routed = self.route(model_spec, call)
        if routed is not model_spec:
            with contextlib.suppress(ServingStatusError):  # the label left since: TF Serving's rule below
                return self._resolve(routed)
        return self._resolve(model_spec)

    def _resolve(self, model_spec: model_pb2.ModelSpec) -> LoadedVersion:
        return self.manager.resolve(model_spec.name, spec_version(model_spec), spec_label(model_spec))

    def answering(self, loaded: LoadedVersion, api: str):
        """Count and time a request as answered by `loaded` (`ServingMetrics.answering`), under its label."""
        label = label_of(self.manager.labels(loaded.name), loaded.version)
        return self.metrics.answering(loaded.name, loaded.version, label, api)

    def estimate(self, loaded: LoadedVersion, probabilities) -> None:
        """Keep the probabilities answered for the version's accuracy estimate (with request logging)."""
        if self.estimates is not None:
            self.estimates.add(loaded.name, loaded.version, probabilities)

    def run(
        self, loaded: LoadedVersion, signature: str, arrays: dict[str, np.ndarray], call: Call = NO_CALL
    ) -> dict[str, np.ndarray]:
        """The model call, batched with others when batching is on; its time is the runtime latency.

        No model work starts for a call whose deadline has passed or whose
        client has gone (`serving/calls.py`).
        """
        call.check()
        started = time.perf_counter()
        if self.scheduler is not None:
            outputs = self.scheduler.run(loaded, signature, arrays, call)
        else:
            outputs = loaded.run(signature, arrays)
        self.metrics.runtime_latency.labels(loaded.name, signature, "TF2").observe(
            (time.perf_counter() - started) * 1e6
        )
        return outputs

    def runner(self, call: Call) -> Runner:
        """`run` for one call's requests: what `LoadedVersion`'s APIs call the model with."""
        return functools.partial(self.run, call=call)

    @staticmethod
    def signature_of(model_spec: model_pb2.ModelSpec) -> str:
        return model_spec.signature_name or SERVING_SIGNATURE

    def input_dtypes(self, model_spec: model_pb2.ModelSpec, signature: str) -> dict[str, int]:
        """The signature's input dtypes (REST needs them to read JSON numbers)."""
        found = self.resolve(model_spec).signature_defs.get(signature)
        if found is None:
            raise InvalidRequestError(f'Serving signature name: "{signature}" not found in signature def')
        return {k: v.dtype for k, v in found.inputs.items()}

    # --- TF Serving's APIs, request proto in, response proto out; shared by gRPC and REST ----------
    def predict(
        self, request: predict_pb2.PredictRequest, call: Call = NO_CALL
    ) -> predict_pb2.PredictResponse:
        loaded = self.resolve(request.model_spec, call)
        signature = self.signature_of(request.model_spec)
        with self.answering(loaded, "Predict"):
            outputs = loaded.predict(
                signature, request.inputs, list(request.output_filter), self.limits, self.runner(call)
            )
            response = predict_pb2.PredictResponse()
            fill_spec(response.model_spec, loaded, signature)
            for key, value in outputs.items():
                response.outputs[key].CopyFrom(proto_from_array(value))
        if self.logger is not None:
            self.logger.log_predict(request, response)
            self.estimate(loaded, outputs.get(PROBABILITIES_OUTPUT))
        return response

    def classify(
        self, request: classification_pb2.ClassificationRequest, call: Call = NO_CALL
    ) -> classification_pb2.ClassificationResponse:
        loaded = self.resolve(request.model_spec, call)
        signature = self.signature_of(request.model_spec)
        with self.answering(loaded, "Classify"):
            classes, scores = loaded.classify(
                signature, examples_of(request.input, self.limits), self.limits, self.runner(call)
            )
            response = classification_pb2.ClassificationResponse()
            fill_spec(response.model_spec, loaded, signature)
            classification_result(classes, scores, response.result)
        if self.logger is not None:
            self.logger.log_classify(request, response)
            self.estimate(loaded, scores)
        return response

    def regress(
        self, request: regression_pb2.RegressionRequest, call: Call = NO_CALL
    ) -> regression_pb2.RegressionResponse:
        loaded = self.resolve(request.model_spec, call)
        signature = self.signature_of(request.model_spec)
        with self.answering(loaded, "Regress"):
            values = loaded.regress(
                signature, examples_of(request.input, self.limits), self.limits, self.runner(call)
            )
        response = regression_pb2.RegressionResponse()
        fill_spec(response.model_spec, loaded, signature)
        for value in values:
            response.result.regressions.add(value=float(value))
        return response

    def multi_inference(
        self, request: inference_pb2.MultiInferenceRequest, call: Call = NO_CALL
    ) -> inference_pb2.MultiInferenceResponse:
        """Classify and regress tasks of one model on one input (TF Serving's `multi_inference.cc` rules)."""
        if not request.tasks:
            raise InvalidRequestError("MultiInferenceRequest must specify at least one task.")
        specs = [task.model_spec for task in request.tasks]
        if len({s.name for s in specs}) != 1:
            raise InvalidRequestError(
                "All ModelSpecs in a MultiInferenceRequest must access the same model name."
            )
        signatures = [self.signature_of(s) for s in specs]
        duplicated = sorted({s for s in signatures if signatures.count(s) > 1})
        if duplicated:
            raise InvalidRequestError(f"Duplicate evaluation of signature: {duplicated[0]}")
        loaded = self.resolve(specs[0], call)
        with self.answering(loaded, "MultiInference"):
            return self._multi_inference(request, loaded, signatures, call)

    def _multi_inference(self, request, loaded: LoadedVersion, signatures: list[str], call: Call):
        serialized = examples_of(request.input, self.limits)
        response = inference_pb2.MultiInferenceResponse()
        for task, signature in zip(request.tasks, signatures, strict=True):
            result = response.results.add()
            fill_spec(result.model_spec, loaded, signature)
            if task.method_name == CLASSIFY_METHOD:
                classes, scores = loaded.classify(signature, serialized, self.limits, self.runner(call))
                classification_result(classes, scores, result.classification_result)
            elif task.method_name == REGRESS_METHOD:
                for value in loaded.regress(signature, serialized, self.limits, self.runner(call)):
                    result.regression_result.regressions.add(value=float(value))
            else:
                raise InvalidRequestError(f"Unsupported signature method_name: {task.method_name}")
        return response

    def metadata(self, request) -> get_model_metadata_pb2.GetModelMetadataResponse:
        """GetModelMetadata: only `signature_def` is defined, as in TF Serving."""
        unsupported = sorted(set(request.metadata_field) - {"signature_def"})
        if unsupported or not request.metadata_field:
            raise InvalidRequestError("Metadata field must be one of [signature_def]")
        loaded = self.resolve(request.model_spec)
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

    def status(self, model_spec: model_pb2.ModelSpec) -> get_model_status_pb2.GetModelStatusResponse:
        """GetModelStatus: every known version (or the one asked for) with TF Serving's states."""
        version = spec_version(model_spec)
        if spec_label(model_spec):
            version = self.manager.resolve(model_spec.name, label=spec_label(model_spec)).version
        response = get_model_status_pb2.GetModelStatusResponse()
        for number, state in sorted(self.manager.status(model_spec.name, version).items()):
            status = response.model_version_status.add(
                version=number, state=get_model_status_pb2.ModelVersionStatus.State.Value(state.state)
            )
            code = UNKNOWN_ERROR if state.error else 0
            status.status.CopyFrom(status_pb2.StatusProto(error_code=code, error_message=state.error))
        return response

    def drain(self) -> None:
        """The server is stopping: queued batches run now rather than at their timeout."""
        if self.scheduler is not None:
            self.scheduler.drain()

    def close(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()
        if self.logger is not None:
            self.logger.close()
