"""Which model versions are loaded, and hot reloading of new ones, TF Serving style.

Models come from a base path with TF Serving's layout (`<base>/<model
name>/<numeric version>/` holding a SavedModel; every model there, version
policy "latest") or from a `models.config` in TF Serving's text format
(`ModelServerConfig`: per model a base path, a version policy `latest`, `all` or
`specific`, and version labels). A poll (every `poll_seconds`) loads new
versions in the background while the current ones keep serving; a version is
served only once completely loaded and warmed up; one that fails to load is
reported with its error in the status and does not replace a serving one;
versions the policy no longer wants, or that vanished from disk, are unloaded.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from typing import Any

import serving  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow)

# isort: split
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from serving.export import CLASSIFY_METHOD
from serving.model_config import MODEL_NAME_PATTERN, ModelSource
from serving.warmup import read_warmup

log = logging.getLogger(__name__)


DEFAULT_SIGNATURE = "serving_default"


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
        inputs = {"inputs": tf.make_tensor_proto(serialized_examples, dtype=tf.string)}
        outputs = self.run(signature_name, inputs, max_batch)
        return outputs["classes"].numpy(), outputs["scores"].numpy()

    def signature(self, signature_name: str):
        try:
            return self.model.signatures[signature_name]
        except KeyError:
            raise ModelNotFoundError(
                f"model {self.name} version {self.version} has no signature '{signature_name}'; "
                f"it has {sorted(self.model.signatures)}"
            ) from None


@dataclasses.dataclass
class VersionState:
    """What GetModelStatus reports for one version."""

    state: str  # START, LOADING, AVAILABLE, UNLOADING, END (TF Serving's names)
    error: str = ""
    fingerprint: tuple = ()


def read_signature_defs(path: str) -> dict[str, meta_graph_pb2.SignatureDef]:
    """The SignatureDefs of a SavedModel, as GetModelMetadata returns them."""
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    return {k: v for k, v in saved_model.meta_graphs[0].signature_def.items() if not k.startswith("__")}


def load_version(name: str, version: int, path: str, max_batch: int = 1024) -> LoadedVersion:
    """Load a SavedModel and replay its warmup requests; any failure means the version is not served."""
    loaded = LoadedVersion(name, version, path, tf.saved_model.load(path), read_signature_defs(path))
    for request in read_warmup(path):
        loaded.run(request.model_spec.signature_name or DEFAULT_SIGNATURE, request.inputs, max_batch)
    return loaded


def _fingerprint(path: str) -> tuple:
    """Changes when a version directory is (re)written, so a failed load is retried after a fix."""
    stat = os.stat(os.path.join(path, "saved_model.pb"))
    return (stat.st_mtime_ns, stat.st_size)


def versions_on_disk(model_base_path: str) -> dict[int, str]:
    """Complete-looking versions: all-digit directories holding a `saved_model.pb`.

    Staging directories (the Pusher's `.tmp-*`) and half-copied versions
    without `saved_model.pb` are not versions.
    """
    if not os.path.isdir(model_base_path):
        return {}
    return {
        int(v): os.path.join(model_base_path, v)
        for v in os.listdir(model_base_path)
        if v.isdigit() and os.path.isfile(os.path.join(model_base_path, v, "saved_model.pb"))
    }


class ModelStore:
    """All configured models, their loaded versions and their states.

    With `base_path`, every directory under it is a model with the "latest"
    policy; with `sources` (from `read_model_config`), exactly those models.
    """

    def __init__(
        self,
        base_path: str | None = None,
        poll_seconds: float = 2.0,
        sources: list[ModelSource] | None = None,
    ):
        if (base_path is None) == (sources is None):
            raise ValueError("give either a model base path or model sources from a models.config")
        self.base_path = os.path.abspath(base_path) if base_path is not None else None
        self.poll_seconds = poll_seconds
        self._configured = {s.name: s for s in sources} if sources is not None else None
        self._lock = threading.Lock()
        self._loaded: dict[str, dict[int, LoadedVersion]] = {}
        self._states: dict[str, dict[int, VersionState]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def where(self) -> str:
        """Where the models come from, for messages."""
        return self.base_path or "the model config"

    # --- discovery and loading -------------------------------------------------------
    def sources(self) -> dict[str, ModelSource]:
        if self._configured is not None:
            return self._configured
        if not os.path.isdir(self.base_path):
            return {}
        return {
            name: ModelSource(name, os.path.join(self.base_path, name))
            for name in sorted(os.listdir(self.base_path))
            if MODEL_NAME_PATTERN.match(name) and os.path.isdir(os.path.join(self.base_path, name))
        }

    def model_names(self) -> list[str]:
        return sorted(self.sources())

    def poll_once(self) -> None:
        """Bring every model's loaded versions in line with its policy and what is on disk."""
        sources = self.sources()
        for name in [n for n in self._states if n not in sources]:
            for version in list(self._states[name]):
                self._forget(name, version)
        for source in sources.values():
            self._sync(source)

    def _sync(self, source: ModelSource) -> None:
        name = source.name
        on_disk = versions_on_disk(source.base_path)
        with self._lock:
            self._states.setdefault(name, {})
            self._loaded.setdefault(name, {})
        for version in [v for v in self._states[name] if v not in on_disk]:
            self._forget(name, version)
        for version in sorted(
            source.wanted(self._loadable(name, on_disk)) - set(self._loaded[name]), reverse=True
        ):
            self._load(name, version, on_disk[version])
        # Recomputed after loading: a version that just failed leaves the older ones serving.
        for version in set(self._loaded[name]) - source.wanted(self._loadable(name, on_disk)):
            self._unload(name, version)

    def _loadable(self, name: str, on_disk: dict[int, str]) -> list[int]:
        """Versions on disk except those that failed to load and are unchanged since."""
        states = self._states[name]

        def failed(version: int) -> bool:
            known = states.get(version)
            return (
                known is not None
                and bool(known.error)
                and known.fingerprint == _fingerprint(on_disk[version])
            )

        return [v for v in on_disk if not failed(v)]

    def _load(self, name: str, version: int, path: str) -> None:
        fingerprint = _fingerprint(path)
        with self._lock:
            self._states[name][version] = VersionState("LOADING", fingerprint=fingerprint)
        try:
            loaded = load_version(name, version, path)
        except Exception as err:
            log.error("model %s version %s failed to load: %s", name, version, err)
            with self._lock:
                self._states[name][version] = VersionState(
                    "END", f"{type(err).__name__}: {err}"[:2000], fingerprint
                )
            return
        with self._lock:
            self._loaded[name][version] = loaded
            self._states[name][version] = VersionState("AVAILABLE", fingerprint=fingerprint)
        log.info("model %s version %s is AVAILABLE", name, version)

    def _unload(self, name: str, version: int) -> None:
        with self._lock:
            self._loaded[name].pop(version, None)
            self._states[name][version] = VersionState("END")
        log.info("model %s version %s unloaded (version policy)", name, version)

    def _forget(self, name: str, version: int) -> None:
        with self._lock:
            self._states[name].pop(version, None)
            if self._loaded.get(name, {}).pop(version, None) is not None:
                log.info("model %s version %s removed from disk: unloaded", name, version)

    def start(self) -> None:
        """Load what is there now, then keep polling in a daemon thread."""
        self.poll_once()
        self._thread = threading.Thread(target=self._poll_forever, name="model-poller", daemon=True)
        self._thread.start()

    def _poll_forever(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll_once()
            except OSError as err:  # a directory vanishing mid-scan; the next poll sees a settled state
                log.warning("polling %s: %s", self.where, err)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # --- lookups for the RPCs ----------------------------------------------------------
    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> LoadedVersion:
        """The loaded version to answer with: the given one, the labelled one, or the newest.

        Errors as TF Serving's: an unknown model or version is `ModelNotFoundError`
        (NOT_FOUND), an unknown label `InvalidRequestError` (INVALID_ARGUMENT).
        """
        with self._lock:
            versions = dict(self._loaded.get(name, {}))
            serving = sorted(n for n, v in self._loaded.items() if v)
        if not versions:
            raise ModelNotFoundError(f"model '{name}' is not being served (serving: {serving})")
        if label:
            source = self.sources().get(name)
            labels = source.labels if source is not None else {}
            if label not in labels:
                raise InvalidRequestError(
                    f"Unrecognized servable version label: {label} (model '{name}' has {sorted(labels)})"
                )
            version = labels[label]
        if version is None:
            return versions[max(versions)]
        if version not in versions:
            raise ModelNotFoundError(
                f"model '{name}' version {version} is not available (available: {sorted(versions)})"
            )
        return versions[version]

    def status(self, name: str, version: int | None = None) -> dict[int, VersionState]:
        with self._lock:
            states = dict(self._states.get(name, {}))
        if not states:
            raise ModelNotFoundError(f"model '{name}' is unknown under {self.where}")
        if version is not None:
            if version not in states:
                raise ModelNotFoundError(f"model '{name}' has no version {version}")
            return {version: states[version]}
        return states
