"""The reference a batch is compared with: by default, the data behind the served model.

The default walks MLMD lineage from the served version (`pipeline.lineage`):
Pusher -> Trainer -> Transform -> ImportExampleGen, whose examples artifact
holds the exact training split the model learned from, and on to the
ImageFeatureStatistics run over those examples, whose training-split
statistics the pipeline already computed. The model-output part (the model's
answers on the eval split) is computed here. Both are cached per examples
artifact and model under `<pipeline_root>/drift_reference/`, so only the first
report for a version pays for them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import monitoring  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow)

# isort: split
import numpy as np
from tensorflow_metadata.proto.v0 import statistics_pb2

from components.dataset import read_example_images as examples_images
from components.image_statistics import MEAN_IMAGE_FILE, STATS_FILE, split_files
from monitoring.batches import load_batch
from monitoring.drift import Reference, build_reference, cached_reference, model_predictor, with_model_outputs
from pipeline.config import DriftConfig, PipelineConfig
from pipeline.lineage import lineage_of


def pipeline_statistics(chain: dict, drift: DriftConfig, description: str) -> Reference | None:
    """The training split's image-feature statistics the pipeline wrote, if they match `drift.bins`."""
    found = chain["image_statistics"]
    if not found.get("uri") or found.get("bins") != drift.bins:
        return None
    split = Path(found["uri"]) / "Split-train"
    if not (split / STATS_FILE).is_file():
        return None
    statistics = statistics_pb2.DatasetFeatureStatisticsList.FromString((split / STATS_FILE).read_bytes())
    images = int(statistics.datasets[0].num_examples)
    return Reference(statistics, np.load(split / MEAN_IMAGE_FILE), description.format(images=images), images)


def served_model_reference(
    config: PipelineConfig,
    drift: DriftConfig,
    version: int | None,
    use_model: bool,
    progress: Callable[[str], None],
) -> tuple[Reference, Callable | None, dict]:
    """Reference statistics of the version's training data, its predictor, and its lineage."""
    chain = lineage_of(config, version)
    examples_uri, model_dir = chain["examples"]["uri"], chain["pushed"]["destination"]
    predict = model_predictor(model_dir) if use_model else None
    description = f"training split of version {chain['version']} ({{images}} images, {examples_uri})" + (
        "; model outputs on its eval split" if predict else ""
    )

    def build() -> Reference:
        progress(f"reference statistics for version {chain['version']} (first report for it; then cached)")
        held_out = examples_images(split_files(examples_uri, "eval")) if predict else None
        from_pipeline = pipeline_statistics(chain, drift, description)
        if from_pipeline is not None:
            return with_model_outputs(from_pipeline, held_out, predict, drift)
        training = examples_images(split_files(examples_uri, "train"))
        return build_reference(training, held_out, predict, drift, description.format(images=len(training)))

    cache = os.path.join(config.pipeline_root, "drift_reference")
    key = [os.path.abspath(examples_uri), os.path.abspath(model_dir) if predict else "", str(drift.bins)]
    return cached_reference(cache, key, build), predict, chain


def data_reference(
    path: str, drift: DriftConfig, model_dir: str | None, progress: Callable[[str], None]
) -> tuple[Reference, Callable | None]:
    """Reference statistics of explicit data (any input `load_batch` reads)."""
    progress(f"computing reference statistics from {path}")
    images = load_batch(path).images
    predict = model_predictor(model_dir) if model_dir else None
    return build_reference(images, images, predict, drift, f"{path} ({len(images)} images)"), predict
