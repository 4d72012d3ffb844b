"""ServedModel: the model production traffic gets, as a Model artifact for the label gate, Trainer, Evaluator.

The bar for a new model is the version behind the `stable` label of the
staged rollout (`release/rollout.py`: `<serving_dir>/<model>/rollout.json`,
else the newest version on disk), never merely "the last model the Evaluator
blessed": a canary never promoted, a model that failed the serving check or
was rolled back is not the bar. TFX's resolvers could pick it from ML
Metadata under LocalDagRunner, but Kubeflow V2 / Vertex AI compile only TFX's
two built-in strategies (`LatestBlessedModelStrategy` there is a query over
the whole metadata store, which may hold other pipelines' models). So this
component reads the serving directory through TensorFlow's filesystem, on
every orchestrator alike, and copies the served version into its output
(`Format-Serving/`, TFX's Model layout), with the version as the
`served_version` custom property.

Before the first push nothing serves: the artifact is empty and
`served_version` is 0; the label gate then passes, the Trainer trains from
scratch, and the Evaluator (`components/evaluator.py`) measures the candidate
against the floor alone.

It takes the run's span Examples as its input, so the served model is read
once per span and cached with it: a rerun with no new data (after a promote,
say) gates as the span's first run did and stays cached.
"""

import logging
import os

from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact, standard_artifacts
from tfx.utils import path_utils

from components.pusher import copy_tree
from core.errors import PipelineError
from core.versions import has_saved_model
from release.rollout import served_version

log = logging.getLogger(__name__)
SERVED_VERSION_PROPERTY = "served_version"


def served_model_dir(model: artifact.Artifact) -> str | None:
    """The SavedModel a ServedModel artifact holds, or None when nothing served."""
    path = path_utils.serving_model_path(model.uri)
    return path if has_saved_model(path) else None


def copy_served_model(serving_dir: str, model_name: str, target: str) -> int | None:
    """Copy the served version's SavedModel to `target`; return the version (None: nothing serves yet)."""
    version = served_version(serving_dir, model_name)
    if version is None:
        return None
    source = os.path.join(serving_dir, model_name, str(version))
    if not has_saved_model(source):
        raise PipelineError(
            f"{source}: version {version}, which the rollout serves as stable, has no saved_model.pb; "
            "roll back or push again before training against it"
        )
    copy_tree(source, target)
    return version


@component
def ServedModel(
    examples: InputArtifact[standard_artifacts.Examples],
    model: OutputArtifact[standard_artifacts.Model],
    serving_dir: Parameter[str],
    model_name: Parameter[str],
) -> None:
    """Copy the version the `stable` label names (else the newest) into `model`; nothing before a push."""
    del examples  # the cache key: one decision per span
    version = copy_served_model(serving_dir, model_name, path_utils.serving_model_path(model.uri))
    model.set_int_custom_property(SERVED_VERSION_PROPERTY, version or 0)
    log.info("the served model: version %s", version if version else "none yet")
