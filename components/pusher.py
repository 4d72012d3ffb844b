"""An atomic, idempotent Pusher for a TF Serving model directory.

TFX's stock Pusher copies files straight into `<base>/<version>/`, so a crash
mid-copy leaves a directory TF Serving may try to load, and every rerun of an
unchanged model pushes a duplicate version. This executor keeps the Pusher's
contract (blessing check, `pushed`, `pushed_destination` and `pushed_version`
properties on the PushedModel artifact) and changes two things:

- the version is written under a temporary, non-numeric name in the same
  directory (TF Serving ignores it) and renamed into place when complete;
- a model artifact that already has a version there is not pushed again; the
  existing version is reported instead.
"""

from __future__ import annotations

import components  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow)

# isort: split
import json
import os
import time
import uuid
from typing import Any

import tensorflow as tf
from tfx import types
from tfx.components.pusher import executor as tfx_pusher
from tfx.dsl.io import fileio
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, proto_utils

PUSH_RECORD = "fmnist_push.json"


class PushError(RuntimeError):
    """The model could not be written to the serving directory; nothing was left behind."""


def numeric_versions(base: str) -> list[int]:
    """Versions TF Serving would load: the all-digit directory names under `base`."""
    if not fileio.exists(base):
        return []
    return sorted(int(name.rstrip("/")) for name in fileio.listdir(base) if name.rstrip("/").isdigit())


def version_of_model(base: str, model_uri: str) -> int | None:
    """The version already pushed from this model artifact, if any."""
    for version in numeric_versions(base):
        record = os.path.join(base, str(version), PUSH_RECORD)
        if (
            fileio.exists(record)
            and json.loads(io_utils.read_string_file(record)).get("model_uri") == model_uri
        ):
            return version
    return None


def publish_version(model_path: str, base: str, model_uri: str) -> int:
    """Copy the SavedModel to `<base>/<new version>` atomically; return the version.

    The version is the Unix time in seconds, or one more than the newest
    version if that is not larger (two pushes within a second stay ordered).
    """
    version = max([int(time.time())] + [v + 1 for v in numeric_versions(base)])
    staging = os.path.join(base, f".tmp-{version}-{uuid.uuid4().hex[:8]}")
    try:
        fileio.makedirs(base)
        io_utils.copy_dir(model_path, staging)
        io_utils.write_string_file(
            os.path.join(staging, PUSH_RECORD), json.dumps({"model_uri": model_uri, "version": version})
        )
        fileio.rename(staging, os.path.join(base, str(version)))
    except (OSError, tf.errors.OpError) as err:  # disk full, read-only or vanished serving directory
        raise PushError(f"cannot push version {version} to {base}: {err}; nothing was published") from err
    finally:
        try:
            if fileio.exists(staging):
                fileio.rmtree(staging)
        except (OSError, tf.errors.OpError):  # the same failing disk; a server never loads .tmp-*
            pass
    return version


class AtomicPusherExecutor(tfx_pusher.Executor):
    """Pusher executor with atomic, de-duplicated filesystem pushes."""

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
        io_utils.copy_dir(model_path, model_push.uri)
        self._MarkPushed(
            model_push, pushed_destination=os.path.join(base, str(version)), pushed_version=str(version)
        )
