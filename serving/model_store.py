"""Which model versions are loaded, and hot reloading of new ones, TF Serving style.

The base path has TF Serving's layout: `<base>/<model name>/<numeric version>/`
holding a SavedModel. Version policy is "latest": the highest version that
loaded successfully serves. A poll (every `poll_seconds`) loads new versions in
the background while the current one keeps serving; a version is served only
once completely loaded; one that fails to load is reported with its error in
the status and does not replace the serving one; removed versions are unloaded.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
from typing import Any

import serving  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow)

# isort: split
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from serving.warmup import read_warmup

log = logging.getLogger(__name__)
MODEL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


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


class ModelStore:
    """All models under a base path, their loaded versions and their states."""

    def __init__(self, base_path: str, poll_seconds: float = 2.0):
        self.base_path = os.path.abspath(base_path)
        self.poll_seconds = poll_seconds
        self._lock = threading.Lock()
        self._serving: dict[str, LoadedVersion] = {}
        self._states: dict[str, dict[int, VersionState]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- discovery and loading -------------------------------------------------------
    def model_names(self) -> list[str]:
        if not os.path.isdir(self.base_path):
            return []
        return sorted(
            n
            for n in os.listdir(self.base_path)
            if MODEL_NAME_PATTERN.match(n) and os.path.isdir(os.path.join(self.base_path, n))
        )

    def _versions_on_disk(self, name: str) -> dict[int, str]:
        directory = os.path.join(self.base_path, name)
        return {
            int(v): os.path.join(directory, v)
            for v in os.listdir(directory)
            if v.isdigit() and os.path.isfile(os.path.join(directory, v, "saved_model.pb"))
        }

    def poll_once(self) -> None:
        """Load the newest version of each model if it is new; unload what disappeared."""
        for name in self.model_names():
            on_disk = self._versions_on_disk(name)
            states = self._states.setdefault(name, {})
            for version in [v for v in states if v not in on_disk]:
                self._forget(name, version)
            if on_disk:
                self._maybe_load(name, max(on_disk), on_disk[max(on_disk)])

    def _maybe_load(self, name: str, version: int, path: str) -> None:
        states = self._states[name]
        current = self._serving.get(name)
        if current is not None and current.version >= version:
            return
        fingerprint = _fingerprint(path)
        known = states.get(version)
        if known is not None and known.state == "END" and known.fingerprint == fingerprint:
            return  # failed before and unchanged since
        with self._lock:
            states[version] = VersionState("LOADING", fingerprint=fingerprint)
        try:
            loaded = load_version(name, version, path)
        except Exception as err:
            log.error("model %s version %s failed to load: %s", name, version, err)
            with self._lock:
                states[version] = VersionState("END", f"{type(err).__name__}: {err}"[:2000], fingerprint)
            return
        with self._lock:
            previous = self._serving.get(name)
            self._serving[name] = loaded
            states[version] = VersionState("AVAILABLE", fingerprint=fingerprint)
            if previous is not None:
                states[previous.version] = VersionState("END")
        log.info("model %s version %s is AVAILABLE", name, version)

    def _forget(self, name: str, version: int) -> None:
        with self._lock:
            self._states[name].pop(version, None)
            current = self._serving.get(name)
            if current is not None and current.version == version:
                del self._serving[name]
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
                log.warning("polling %s: %s", self.base_path, err)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # --- lookups for the RPCs ----------------------------------------------------------
    def resolve(self, name: str, version: int | None = None) -> LoadedVersion:
        """The loaded version to answer with; `ModelNotFoundError` names what is missing."""
        with self._lock:
            loaded = self._serving.get(name)
        if loaded is None:
            raise ModelNotFoundError(f"model '{name}' is not being served (serving: {sorted(self._serving)})")
        if version is not None and version != loaded.version:
            raise ModelNotFoundError(
                f"model '{name}' version {version} is not available (serving version {loaded.version})"
            )
        return loaded

    def status(self, name: str, version: int | None = None) -> dict[int, VersionState]:
        with self._lock:
            states = dict(self._states.get(name, {}))
        if not states:
            raise ModelNotFoundError(f"model '{name}' is unknown under {self.base_path}")
        if version is not None:
            if version not in states:
                raise ModelNotFoundError(f"model '{name}' has no version {version}")
            return {version: states[version]}
        return states
