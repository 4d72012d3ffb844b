"""ServingCheck: the candidate model must answer real gRPC requests before it may be pushed.

This is the job of TFX's InfraValidator, which starts `tensorflow_model_server`
in Docker or Kubernetes; neither exists on this platform. ServingCheck starts
this project's TF Serving-protocol server (`serving/`) in process on a free
loopback port, loads the candidate exactly as a server would (including its
warmup requests), and sends real examples (of the split it is given: the
pipeline gives it the gold set) through gRPC with every signature the clients
use: Predict on `serving_default` and `predict_images`, and Classify on
`classify`. It writes an `InfraBlessing`
the same way InfraValidator does (`blessed` property, `INFRA_BLESSED` or
`INFRA_NOT_BLESSED` file, the latter holding the reasons), and the Pusher
refuses a model whose blessing is not set.
"""

import logging
import os

import numpy as np
import tensorflow as tf
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts
from tfx.utils import io_utils, path_utils

from core.config import ServingConfig
from core.errors import ProjectError
from core.examples import checked_images, parse_example_pixels, read_serialized, split_files
from core.versions import has_saved_model
from core.vocabulary import CLASS_NAMES
from serving.client import ServingClient
from serving.servable import load_version
from serving.server import build_server
from serving.version_manager import VersionManager

log = logging.getLogger(__name__)
CHECKED_MODEL = "candidate"
BLESSED_PROPERTY = "blessed"
BLESSED_FILE, NOT_BLESSED_FILE = "INFRA_BLESSED", "INFRA_NOT_BLESSED"


def _probabilities_problems(what: str, probabilities: np.ndarray, count: int) -> list[str]:
    if probabilities.shape != (count, len(CLASS_NAMES)):
        return [f"{what}: probabilities of shape {list(probabilities.shape)}, expected [{count}, 10]"]
    if not np.all(np.isfinite(probabilities)) or not np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-3):
        return [f"{what}: probabilities are not finite or do not sum to 1"]
    return []


def _ask(client: ServingClient, serialized: list[bytes]) -> list[str]:
    """Every RPC the clients use, checked for shape and for agreement between the signatures."""
    by_examples, _ = client.predict_examples(serialized, model=CHECKED_MODEL)
    problems = _probabilities_problems("Predict serving_default", by_examples, len(serialized))
    images = checked_images(parse_example_pixels(serialized), "the examples sent")
    predictions, _ = client.predict_images(images, model=CHECKED_MODEL)
    by_images = np.stack([p.probabilities for p in predictions])
    problems += _probabilities_problems("Predict predict_images", by_images, len(serialized))
    if not problems and not np.allclose(by_images, by_examples, atol=1e-4):
        problems.append("predict_images and serving_default disagree on the same images")
    classified, _ = client.classify([tf.train.Example.FromString(s) for s in serialized], model=CHECKED_MODEL)
    if len(classified) != len(serialized) or any(set(c) != set(CLASS_NAMES) for c in classified):
        problems.append("Classify does not return a score for each of the 10 class names per example")
    return problems


def check_model_serves(model_dir: str, serialized: list[bytes], timeout: float = 60.0) -> list[str]:
    """Serve `model_dir` over loopback gRPC and query it; the problems found (none: it serves)."""
    if not serialized:
        return ["no examples to send"]
    if not has_saved_model(model_dir):
        return [f"the model does not load: no saved_model.pb in {model_dir}"]
    try:
        loaded = load_version(CHECKED_MODEL, 1, model_dir)
    except Exception as err:  # whatever stops a load stops TF Serving's too; the reason is the verdict
        return [f"the model does not load: {type(err).__name__}: {err}"]
    server, port, _ = build_server(VersionManager.serving_only([loaded]), ServingConfig(port=0))
    server.start()
    client = ServingClient(f"127.0.0.1:{port}", timeout=timeout, retries=0)
    try:
        return _ask(client, serialized)
    except ProjectError as err:
        return [f"a request failed: {err}"]
    finally:
        client.close()
        server.stop(grace=None)


@component
def ServingCheck(
    model: InputArtifact[standard_artifacts.Model],
    examples: InputArtifact[standard_artifacts.Examples],
    blessing: OutputArtifact[standard_artifacts.InfraBlessing],
    split: Parameter[str] = "eval",
    num_examples: Parameter[int] = 32,
) -> None:
    """Bless the model for pushing only if it answers `num_examples` real examples of `split` over gRPC.

    An answer passes when each signature returns finite probabilities of shape
    [n, 10] summing to 1, `predict_images` agrees with `serving_default` on the
    same images, and Classify scores all 10 class names; accuracy is the
    Evaluator's business, not this check's.
    """
    files = split_files(artifact_utils.get_split_uri([examples], split))
    problems = check_model_serves(
        path_utils.serving_model_path(model.uri), read_serialized(files, num_examples)
    )
    if problems:
        log.error("serving check failed; the model will not be pushed: %s", "; ".join(problems))
        io_utils.write_string_file(os.path.join(blessing.uri, NOT_BLESSED_FILE), "\n".join(problems))
        blessing.set_int_custom_property(BLESSED_PROPERTY, 0)
        blessing.set_string_custom_property("problems", "; ".join(problems)[:2000])
    else:
        io_utils.write_string_file(os.path.join(blessing.uri, BLESSED_FILE), "")
        blessing.set_int_custom_property(BLESSED_PROPERTY, 1)
