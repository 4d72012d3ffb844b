"""Which model versions are loaded, and hot reloading, as TF Serving's manager does it.

Models come from a base path with TF Serving's layout (`<base>/<model
name>/<version>/` holding a SavedModel; every model there, version policy
"latest"), or from a `models.config` in TF Serving's text format (per model a
base path, a version policy `latest`, `all` or `specific`, and version
labels), re-read when it changes, as `--model_config_file_poll_wait_seconds`
makes TF Serving do; a file that no longer parses is reported and the last
good configuration stays in force.

Each poll (every `poll_seconds`) brings the loaded versions in line with the
policy and the disk, with TF Serving's behaviours:

- a version is served only once completely loaded and warmed up; one that
  fails to load is reported as END with its error, and retried when its
  directory changes (a copy that was still in progress) or, unchanged, up to
  `max_num_load_retries` times `load_retry_interval_seconds` apart;
- availability is preserved: a version the policy no longer wants, or whose
  directory was deleted, keeps answering until a wanted version is AVAILABLE
  (unless no version is wanted at all);
- a version label follows its new version only once that version is
  AVAILABLE; until then it keeps pointing at the version it named before;
- a base path that is missing or cannot be read (a directory renamed away
  for a moment, a config pointing at a path not there yet, an object store
  that fails) changes nothing: every loaded version and label keeps serving,
  and a warning says so at most once a minute per path. TF Serving's poll
  fails the same way before any version is unaspired
  (tensorflow_serving/sources/storage_path/file_system_storage_path_source.cc,
  "Could not find base path", lines 253-262 and 441-446). With a base path
  of models, a model once seen stays configured, so its directory missing is
  this case too;
- a base path that exists and is readable but holds no version unloads that
  model's versions, as TF Serving does (the empty aspired list of lines
  313-318 and 463; its `servable_versions_always_present`, lines 450-453,
  which would keep them, is not offered here): an empty directory is what
  deleting every version leaves;
- the polling thread survives any error, logs it and polls again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import tensorflow as tf

from core.errors import InputError
from core.versions import has_saved_model, version_dirs
from serving.log_limit import LogLimit
from serving.model_config import MODEL_NAME_PATTERN, ModelConfigError, ModelSource, read_model_config
from serving.servable import InvalidRequestError, LoadedVersion, ModelNotFoundError, load_version

log = logging.getLogger(__name__)
MAX_NUM_LOAD_RETRIES = 5  # TF Serving's defaults (model_servers/server.h)
LOAD_RETRY_INTERVAL_SECONDS = 60.0
# Told of every load and unload: (model name, version, version path, "AVAILABLE" | "FAILED" | "UNLOADED").
Observer = Callable[[str, int, str, str], None]
T = TypeVar("T")


@dataclasses.dataclass
class VersionState:
    """What GetModelStatus reports for one version."""

    state: str  # START, LOADING, AVAILABLE, UNLOADING, END (TF Serving's names)
    error: str = ""


@dataclasses.dataclass
class _Failure:
    fingerprint: str
    attempts: int
    last_attempt: float


def versions_on_disk(model_base_path: str) -> dict[int, str]:
    """Versions ready to try: version directories (TF Serving's naming rule) holding a `saved_model.pb`.

    Staging directories (the Pusher's `.tmp-*`) and half-copied versions
    without `saved_model.pb` are not versions.
    """
    return {v: path for v, path in version_dirs(model_base_path).items() if has_saved_model(path)}


def model_directories(base_path: str) -> list[str]:
    """The children of a base path of models that name a model (TF Serving's model name rule)."""
    names = (n.rstrip("/") for n in tf.io.gfile.listdir(base_path))
    return [n for n in names if MODEL_NAME_PATTERN.match(n) and tf.io.gfile.isdir(os.path.join(base_path, n))]


def read_directory(path: str, read: Callable[[str], T]) -> tuple[T | None, str]:
    """`read(path)`, or None and why not: the directory does not exist or cannot be listed."""
    try:
        if tf.io.gfile.isdir(path):
            return read(path), ""
        return None, "does not exist"
    except (tf.errors.OpError, OSError) as err:
        return None, f"cannot be read: {err}"


def directory_fingerprint(path: str) -> str:
    """Changes whenever any file under a version directory is added, removed, resized or rewritten."""
    digest = hashlib.sha256()
    for directory, _, names in sorted(tf.io.gfile.walk(path)):
        for name in sorted(names):
            stat = tf.io.gfile.stat(os.path.join(directory, name))
            digest.update(f"{directory}/{name}:{stat.length}:{stat.mtime_nsec}\n".encode())
    return digest.hexdigest()


class VersionManager:
    """All configured models, their loaded versions, their states and their labels.

    Give one of: `base_path` (every directory under it is a model with the
    "latest" policy), `config_file` (TF Serving's models.config, re-read when
    it changes), or `sources` (fixed models).
    """

    def __init__(
        self,
        base_path: str | None = None,
        poll_seconds: float = 2.0,
        sources: list[ModelSource] | None = None,
        config_file: str | None = None,
        max_num_load_retries: int = MAX_NUM_LOAD_RETRIES,
        load_retry_interval_seconds: float = LOAD_RETRY_INTERVAL_SECONDS,
    ):
        if sum(x is not None for x in (base_path, sources, config_file)) != 1:
            raise ValueError("give exactly one of a model base path, a models.config, or model sources")
        self.base_path = base_path
        self.config_file = config_file
        self.poll_seconds = poll_seconds
        self.max_num_load_retries = max_num_load_retries
        self.load_retry_interval_seconds = load_retry_interval_seconds
        self._configured = {s.name: s for s in sources} if sources is not None else None
        self._config_text: str | None = None
        if config_file is not None:
            self._reload_config()  # a bad file at start is bad input (exit code 2), named
        self._lock = threading.Lock()
        self._loaded: dict[str, dict[int, LoadedVersion]] = {}
        self._states: dict[str, dict[int, VersionState]] = {}
        self._labels: dict[str, dict[str, int]] = {}
        self._names: frozenset[str] = frozenset()  # the configured models as of the last poll
        self._failures: dict[tuple[str, int], _Failure] = {}
        self.poll_errors = 0
        self._log_limit = LogLimit(log)
        self.observers: list[Observer] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def serving_only(cls, versions: list[LoadedVersion]) -> VersionManager:
        """A manager of already loaded versions that never polls (the pipeline's serving check)."""
        manager = cls(sources=[], poll_seconds=3600)
        for loaded in versions:
            manager._loaded.setdefault(loaded.name, {})[loaded.version] = loaded
            manager._states.setdefault(loaded.name, {})[loaded.version] = VersionState("AVAILABLE")
        manager._names = frozenset(manager._loaded)
        return manager

    @property
    def where(self) -> str:
        """Where the models come from, for messages."""
        return self.base_path or self.config_file or "the given models"

    # --- configuration ---------------------------------------------------------------------
    def _reload_config(self) -> None:
        """Re-read the models.config if its text changed; keep the last good one if it is broken."""
        try:
            with tf.io.gfile.GFile(self.config_file) as f:
                text = f.read()
        except (tf.errors.OpError, OSError) as err:
            if self._configured is None:
                raise ModelConfigError(f"{self.config_file}: cannot read the model config: {err}") from err
            log.error("%s cannot be read (%s); the previous configuration stays", self.config_file, err)
            return
        if text == self._config_text:
            return
        try:
            sources = read_model_config(self.config_file)
        except InputError:
            if self._configured is None:
                raise
            log.error("%s changed but does not parse; the previous configuration stays", self.config_file)
            self._config_text = text
            return
        self._configured = {s.name: s for s in sources}
        self._config_text = text
        log.info("model config %s: %s", self.config_file, ", ".join(sorted(self._configured)))

    def sources(self) -> dict[str, ModelSource]:
        """The configured models; with a base path, those under it now and every model seen before."""
        if self._configured is not None:
            return self._configured
        names = sorted({*self._model_dirs(), *self._states})
        return {name: ModelSource(name, os.path.join(self.base_path, name)) for name in names}

    def _model_dirs(self) -> list[str]:
        """Model directories under the base path; none (a warning, rate-limited) when it cannot be read."""
        names, problem = read_directory(self.base_path, model_directories)
        if names is None:
            message = "Could not find base path %s (%s); the models loaded from it keep serving"
            self._log_limit.log(logging.WARNING, self.base_path, message, self.base_path, problem)
            return []
        self._log_limit.forget(self.base_path)
        return names

    def model_names(self) -> list[str]:
        return sorted(self.sources())

    def serves(self, name: str) -> bool:
        """Whether `name` is a configured model (as of the last poll; no disk access, for every request)."""
        return name in self._names

    # --- polling ------------------------------------------------------------------------------
    def poll_once(self) -> None:
        """Bring every model's loaded versions and labels in line with its policy and the disk."""
        if self.config_file is not None:
            self._reload_config()
        sources = self.sources()
        self._names = frozenset(sources)
        for name in [n for n in self._states if n not in sources]:
            for version in list(self._states[name]):
                self._unload(name, version, forget=True)
        for source in sources.values():
            self._sync(source)

    def _readable_versions(self, source: ModelSource) -> dict[int, str] | None:
        """The versions on disk under the model's base path, or None (warned) when it cannot be read."""
        on_disk, problem = read_directory(source.base_path, versions_on_disk)
        if on_disk is None:
            self._log_limit.log(
                logging.WARNING, source.base_path,
                "Could not find base path %s for servable %s (%s); it keeps serving version(s) %s",
                source.base_path, source.name, problem, sorted(self._loaded.get(source.name, {})),
            )  # fmt: skip
            return None
        self._log_limit.forget(source.base_path)
        return on_disk

    def _sync(self, source: ModelSource) -> None:
        name = source.name
        on_disk = self._readable_versions(source)
        if on_disk is None:  # nothing is known about the disk: everything stays as it is
            return
        with self._lock:
            self._states.setdefault(name, {})
            self._loaded.setdefault(name, {})
        for version in [v for v in self._states[name] if v not in on_disk and v not in self._loaded[name]]:
            self._unload(name, version, forget=True)  # a failed or unloaded version whose directory is gone
        for _ in range(2):  # a second pass: a version that just failed makes way for an older one
            wanted = source.wanted(self._loadable(name, on_disk))
            for version in sorted(wanted - set(self._loaded[name]), reverse=True):
                self._load(name, version, on_disk[version])
        wanted = source.wanted(self._loadable(name, on_disk))
        available = wanted & set(self._loaded[name])
        for version in set(self._loaded[name]) - wanted:
            if available or not wanted:  # availability first: keep it until a wanted one answers
                self._unload(name, version, forget=version not in on_disk)
        self._update_labels(source)

    def _loadable(self, name: str, on_disk: dict[int, str]) -> list[int]:
        """Versions on disk except failed ones that are unchanged and not due for a retry."""
        now = time.monotonic()

        def ready(version: int) -> bool:
            failure = self._failures.get((name, version))
            if failure is None:
                return True
            if failure.fingerprint != directory_fingerprint(on_disk[version]):
                return True  # rewritten since (a copy that was in progress)
            due = now - failure.last_attempt >= self.load_retry_interval_seconds
            return failure.attempts <= self.max_num_load_retries and due

        return [v for v in on_disk if ready(v)]

    def _load(self, name: str, version: int, path: str) -> None:
        fingerprint = directory_fingerprint(path)
        with self._lock:
            self._states[name][version] = VersionState("LOADING")
        try:
            loaded = load_version(name, version, path)
        except Exception as err:  # whatever a SavedModel or its warmup raises, the version is not served
            previous = self._failures.get((name, version))
            attempts = previous.attempts + 1 if previous and previous.fingerprint == fingerprint else 1
            self._failures[(name, version)] = _Failure(fingerprint, attempts, time.monotonic())
            log.error("model %s version %s failed to load (attempt %d): %s", name, version, attempts, err)
            with self._lock:
                self._states[name][version] = VersionState("END", f"{type(err).__name__}: {err}"[:2000])
            self._tell(name, version, path, "FAILED")
            return
        self._failures.pop((name, version), None)
        with self._lock:
            self._loaded[name][version] = loaded
            self._states[name][version] = VersionState("AVAILABLE")
        log.info("model %s version %s is AVAILABLE", name, version)
        self._tell(name, version, path, "AVAILABLE")

    def _tell(self, name: str, version: int, path: str, event: str) -> None:
        """Tell the observers (the server's metrics); a failing observer must not stop the manager."""
        for observer in self.observers:
            try:
                observer(name, version, path, event)
            except Exception:
                log.exception("observer of model %s version %s failed", name, version)

    def _unload(self, name: str, version: int, forget: bool) -> None:
        with self._lock:
            unloaded = self._loaded.get(name, {}).pop(version, None)
            if forget:
                self._states.get(name, {}).pop(version, None)
                self._failures.pop((name, version), None)
            else:
                self._states[name][version] = VersionState("END")
        if unloaded is not None:
            log.info(
                "model %s version %s unloaded (%s)", name, version, "removed" if forget else "version policy"
            )
            self._tell(name, version, unloaded.path, "UNLOADED")

    def _update_labels(self, source: ModelSource) -> None:
        """Labels move to their configured version once it is AVAILABLE; removed labels go."""
        with self._lock:
            current = self._labels.setdefault(source.name, {})
            loaded = self._loaded.get(source.name, {})
            for label in list(current):
                if label not in source.labels:
                    del current[label]
            for label, version in source.labels.items():
                if version in loaded:
                    current[label] = version

    def start(self) -> None:
        """Load what is there now, then keep polling in a daemon thread."""
        self.poll_once()
        self._thread = threading.Thread(target=self._poll_forever, name="model-poller", daemon=True)
        self._thread.start()

    def _poll_forever(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll_once()
            except Exception:  # a poll must never end polling: log it, try again next time
                self.poll_errors += 1
                log.exception("polling %s failed (the next poll tries again)", self.where)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # --- lookups for the RPCs ----------------------------------------------------------------
    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> LoadedVersion:
        """The loaded version to answer with: the given one, the labelled one, or the newest.

        Errors as TF Serving's: an unknown model or version is `ModelNotFoundError`
        (NOT_FOUND), an unknown label `InvalidRequestError` (INVALID_ARGUMENT).
        """
        with self._lock:
            versions = dict(self._loaded.get(name, {}))
            labels = dict(self._labels.get(name, {}))
            serving = sorted(n for n, v in self._loaded.items() if v)
        if not versions:
            raise ModelNotFoundError(f"model '{name}' is not being served (serving: {serving})")
        if label:
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

    def labels(self, name: str) -> dict[str, int]:
        """The model's labels that answer now (each on an AVAILABLE version): label -> version."""
        with self._lock:
            return dict(self._labels.get(name, {}))

    def status(self, name: str, version: int | None = None) -> dict[int, VersionState]:
        with self._lock:
            states = dict(self._states.get(name, {}))
        if not states:
            raise ModelNotFoundError(f"model '{name}' is unknown to this server")
        if version is not None:
            if version not in states:
                raise ModelNotFoundError(f"model '{name}' has no version {version}")
            return {version: states[version]}
        return states
