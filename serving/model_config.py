"""Which models to serve and which of their versions: TF Serving's `models.config`.

The file is TF Serving's own `ModelServerConfig` in protobuf text format, so
the same file configures this server (`fmnist serve --model-config-file`) and
real TF Serving (`--model_config_file`). Per model: `name`, `base_path`,
`model_platform: "tensorflow"`, a `model_version_policy` (`latest { num_versions }`,
`all {}`, or `specific { versions }`; latest 1 when absent) and
`version_labels` (a name for a version number, e.g. `stable` -> 1712345678).
"""

from __future__ import annotations

import dataclasses
import re

import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from core import storage
from core.config import absolute
from core.errors import InputError

MODEL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
LABEL_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")


class ModelConfigError(InputError):
    """A models.config that TF Serving would refuse; the message names the file and the model."""


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """One model: where its versions live and which of them to serve."""

    name: str
    base_path: str
    policy: str = "latest"  # latest | all | specific (TF Serving's ServableVersionPolicy)
    num_versions: int = 1
    specific: frozenset[int] = frozenset()
    labels: dict[str, int] = dataclasses.field(default_factory=dict, hash=False)

    def wanted(self, candidates: list[int]) -> set[int]:
        """The versions to keep loaded out of the loadable ones on disk."""
        if self.policy == "all":
            return set(candidates)
        if self.policy == "specific":
            return set(candidates) & self.specific
        return set(sorted(candidates)[-self.num_versions :])


def _source(config: model_server_config_pb2.ModelConfig, where: str) -> ModelSource:
    where = f"{where}: model '{config.name}'"
    if not MODEL_NAME_PATTERN.match(config.name):
        raise ModelConfigError(f"{where}: name must match {MODEL_NAME_PATTERN.pattern}")
    if not config.base_path:
        raise ModelConfigError(f"{where}: base_path is empty")
    if config.model_platform not in ("", "tensorflow"):
        raise ModelConfigError(f"{where}: model_platform must be 'tensorflow', got '{config.model_platform}'")
    for label in config.version_labels:
        if not LABEL_PATTERN.match(label):
            raise ModelConfigError(f"{where}: version label '{label}' must match {LABEL_PATTERN.pattern}")
    policy = config.model_version_policy.WhichOneof("policy_choice") or "latest"
    num_versions = config.model_version_policy.latest.num_versions or 1
    specific = frozenset(config.model_version_policy.specific.versions)
    if policy == "specific" and not specific:
        raise ModelConfigError(f"{where}: a specific version policy lists no versions")
    if policy == "latest" and num_versions < 1:
        raise ModelConfigError(f"{where}: latest num_versions must be >= 1")
    return ModelSource(
        name=config.name,
        base_path=absolute(config.base_path),  # URIs (gs://) as they are
        policy=policy,
        num_versions=num_versions,
        specific=specific,
        labels=dict(config.version_labels),
    )


def read_model_config(path: str) -> list[ModelSource]:
    """Parse a TF Serving `models.config`; errors name the file and the model at fault."""
    try:
        text = storage.read_text(path)  # a local file or an object (gs://)
    except (OSError, tf.errors.OpError) as err:
        raise ModelConfigError(f"{path}: cannot read the model config: {err}") from err
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as err:
        raise ModelConfigError(f"{path}: not a TF Serving ModelServerConfig in text format: {err}") from err
    if not config.HasField("model_config_list") or not config.model_config_list.config:
        raise ModelConfigError(f"{path}: model_config_list lists no models")
    sources = [_source(c, path) for c in config.model_config_list.config]
    names = [s.name for s in sources]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ModelConfigError(f"{path}: models configured twice: {duplicated}")
    return sources
