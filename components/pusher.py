"""A safe, idempotent Pusher for a TF Serving model directory, on local disks and object stores.

TFX's stock Pusher copies files straight into `<base>/<version>/`. TF Serving
takes a version as soon as its numbered directory exists (it aspires every
child whose name parses as a number, `file_system_storage_path_source.cc`);
a load that fails because files are still arriving is retried
`max_num_load_retries` times (5), `load_retry_interval_micros` apart (60 s),
then the version stays in error. So a version must not appear before it is
complete. This executor keeps the Pusher's contract (blessing check, `pushed`,
`pushed_destination` and `pushed_version` properties on the PushedModel
artifact) and changes how the files land:

- the model is staged under a non-numeric name (`.tmp-*`, which TF Serving
  skips) and checked against the source (every file, every size);
- on a local disk the staged directory is renamed into place (atomic);
- on an object store (`gs://`), where a "rename" copies object by object in
  listing order, the files are copied into the version directory with
  `saved_model.pb` last and checked again: until that last object lands, the
  version has no graph, and a server that tries it fails fast and retries
  (this project's server does not even try a version without `saved_model.pb`);
- a model artifact that already has a version there is not pushed again; the
  existing version is reported instead;
- a new version is published as the `canary` of the staged rollout
  (`release/rollout.py`): the model's entry in `<serving_dir>/models.config`
  gains it under that label, while `stable` keeps serving.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from typing import Any

import tensorflow as tf
from tfx import types
from tfx.components import Pusher
from tfx.components.pusher import executor as tfx_pusher
from tfx.dsl.components.base import executor_spec
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from core.config import is_uri
from core.errors import PipelineError
from core.versions import version_dirs
from core.vocabulary import SAVED_MODEL_FILE
from release.rollout import push_canary

PUSH_RECORD = "fmnist_push.json"
STAGING_PREFIX = ".tmp-"


class PushError(PipelineError):
    """The model could not be written to the serving directory; nothing loadable was left behind."""


def _files(root: str) -> dict[str, int]:
    """Relative path -> size of every file under `root` (any TensorFlow filesystem)."""
    found = {}
    for directory, _, names in tf.io.gfile.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            found[os.path.relpath(path, root)] = tf.io.gfile.stat(path).length
    return found


def copy_tree(source: str, target: str, last: str = SAVED_MODEL_FILE) -> dict[str, int]:
    """Copy every file of `source` under `target`, the file `last` after all others; return the files."""
    files = _files(source)
    for relative in sorted(files, key=lambda p: (p == last, p)):
        destination = os.path.join(target, relative)
        tf.io.gfile.makedirs(os.path.dirname(destination))
        tf.io.gfile.copy(os.path.join(source, relative), destination, overwrite=True)
    return files


def verify_copy(expected: dict[str, int], target: str) -> None:
    """Raise PushError unless `target` holds exactly the expected files with the expected sizes."""
    found = _files(target)
    if found != expected:
        differing = sorted(set(found.items()) ^ set(expected.items()))[:5]
        raise PushError(f"{target}: the copy differs from the model (first differences: {differing})")


def version_of_model(base: str, model_uri: str) -> int | None:
    """The version already pushed from this model artifact, if any."""
    for version, path in version_dirs(base).items():
        record = os.path.join(path, PUSH_RECORD)
        if tf.io.gfile.exists(record):
            with tf.io.gfile.GFile(record) as f:
                if json.loads(f.read()).get("model_uri") == model_uri:
                    return version
    return None


def _remove(path: str) -> None:
    try:
        if tf.io.gfile.exists(path):
            tf.io.gfile.rmtree(path)
    except (OSError, tf.errors.OpError):  # the same failing disk; a server never loads what is left
        pass


def publish_version(model_path: str, base: str, model_uri: str) -> int:
    """Copy the SavedModel to `<base>/<new version>` so that it appears complete; return the version.

    The version is the Unix time in seconds, or one more than the newest
    version if that is not larger (two pushes within a second stay ordered).
    """
    version = max([int(time.time())] + [v + 1 for v in version_dirs(base)])
    staging = os.path.join(base, f"{STAGING_PREFIX}{version}-{uuid.uuid4().hex[:8]}")
    final = os.path.join(base, str(version))
    published = False
    try:
        tf.io.gfile.makedirs(base)
        expected = copy_tree(model_path, staging)
        record = json.dumps({"model_uri": model_uri, "version": version})
        with tf.io.gfile.GFile(os.path.join(staging, PUSH_RECORD), "w") as f:
            f.write(record)
        expected[PUSH_RECORD] = len(record.encode())
        verify_copy(expected, staging)
        if is_uri(base):
            copy_tree(staging, final)
            verify_copy(expected, final)
        else:
            tf.io.gfile.rename(staging, final)
        published = True
    except (OSError, tf.errors.OpError) as err:  # disk full, read-only or vanished serving directory
        raise PushError(f"cannot push version {version} to {base}: {err}; nothing was published") from err
    finally:
        _remove(staging)
        if not published:
            _remove(final)
    return version


class AtomicPusherExecutor(tfx_pusher.Executor):
    """Pusher executor with complete-or-absent, de-duplicated filesystem pushes."""

    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        model_push = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.PUSHED_MODEL_KEY]
        )
        if not self.CheckBlessing(input_dict):
            self._MarkNotPushed(model_push)
            return
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination)
        base = destination.filesystem.base_directory
        model_path = self.GetModelPath(input_dict)
        model_uri = artifact_utils.get_single_uri(input_dict[standard_component_specs.MODEL_KEY])

        version = version_of_model(base, model_uri)
        if version is None:
            version = publish_version(model_path, base, model_uri)
            rollout = push_canary(
                os.path.dirname(base.rstrip("/")), os.path.basename(base.rstrip("/")), version
            )
            logging.info("version %s pushed as canary; rollout: %s", version, rollout.describe())
        copy_tree(model_path, model_push.uri)
        self._MarkPushed(
            model_push, pushed_destination=os.path.join(base, str(version)), pushed_version=str(version)
        )


class AtomicPusher(Pusher):
    """TFX's Pusher component with `AtomicPusherExecutor`."""

    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(AtomicPusherExecutor)
