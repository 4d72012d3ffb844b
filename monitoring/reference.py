"""The reference a batch is compared with: by default, the data behind the served model.

The default walks ML Metadata lineage from the served version (its `stable`
label; `pipeline.lineage`): Pusher -> Trainer -> Transform -> the spans of its
training window, and on to the TrainingWindowImageStatistics run over exactly
those spans, whose train-split statistics the pipeline already computed. The
model-output part (the model's answers on the gold test set, which it never
trained on) is computed here. Both are cached per window and model under
`<pipeline_root>/drift_reference/`, so only the first report for a version
pays for them.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable

import numpy as np
import tensorflow as tf
from tensorflow_metadata.proto.v0 import statistics_pb2
from tfx.components.statistics_gen import stats_artifact_utils

from components.image_statistics import MEAN_IMAGE_FILE
from core.config import DriftConfig, PipelineConfig
from core.examples import read_example_images, split_files
from core.spans import GOLD_SPLIT_DIR
from core.vocabulary import DRIFT_REFERENCE_DIR, MODEL_NAME
from monitoring.batches import load_batch
from monitoring.drift import (
    Reference,
    build_reference,
    cached_reference,
    model_predictor,
    with_answers,
    with_model_outputs,
)
from pipeline.lineage import LineageChain, lineage_of

TRAIN_SPLIT = "train"


def _split_dir(artifact_uri: str, split: str) -> str:
    return os.path.join(artifact_uri, f"Split-{split}")


def pipeline_statistics(chain: LineageChain, drift: DriftConfig, description: str) -> Reference | None:
    """The training window's image-feature statistics the pipeline wrote, if they match `drift.bins`."""
    if not chain.image_statistics_uri or chain.image_statistics_bins != drift.bins:
        return None
    split = _split_dir(chain.image_statistics_uri, TRAIN_SPLIT)
    stats_file = os.path.join(split, stats_artifact_utils.BINARY_PB_BASENAME)
    if not tf.io.gfile.exists(stats_file):
        return None
    with tf.io.gfile.GFile(stats_file, "rb") as f:
        statistics = statistics_pb2.DatasetFeatureStatisticsList.FromString(f.read())
    with tf.io.gfile.GFile(os.path.join(split, MEAN_IMAGE_FILE), "rb") as f:
        mean = np.load(io.BytesIO(f.read()))
    images = int(statistics.datasets[0].num_examples)
    return Reference(statistics, mean, description.format(images=images), images)


def served_model_reference(
    config: PipelineConfig,
    drift: DriftConfig,
    version: int | None,
    use_model: bool,
    progress: Callable[[str], None],
) -> tuple[Reference, Callable | None, LineageChain]:
    """Reference statistics of the version's training window, its predictor, and its lineage.

    The image features come from the training window's train splits; the
    model-output features from the model's answers on the gold test set,
    which it never trained on.
    """
    chain = lineage_of(config, version)
    model_dir = chain.pushed_destination
    predict = model_predictor(model_dir) if use_model else None
    spans = [s.span for s in chain.spans]
    description = f"training window of version {chain.version} (spans {spans}, {{images}} images)" + (
        "; model outputs on the gold test set" if predict else ""
    )

    def build() -> Reference:
        progress(f"reference statistics for version {chain.version} (first report for it; then cached)")
        held_out = None
        if predict and chain.gold_examples_uri:
            held_out = read_example_images(split_files(_split_dir(chain.gold_examples_uri, GOLD_SPLIT_DIR)))
        from_pipeline = pipeline_statistics(chain, drift, description)
        if from_pipeline is not None:
            return with_model_outputs(from_pipeline, held_out, predict, drift)
        files = [f for s in chain.spans for f in split_files(_split_dir(s.examples_uri, TRAIN_SPLIT))]
        training = read_example_images(files)
        return build_reference(training, held_out, predict, drift, description.format(images=len(training)))

    cache = os.path.join(config.pipeline_root, DRIFT_REFERENCE_DIR)
    key = [*(s.examples_uri for s in chain.spans), model_dir if predict else "", str(drift.bins)]
    return cached_reference(cache, key, build), predict, chain


def data_reference(
    path: str,
    drift: DriftConfig,
    model_dir: str | None,
    progress: Callable[[str], None],
    model_name: str = MODEL_NAME,
    logged_version: int | None = None,
) -> tuple[Reference, Callable | None]:
    """Reference statistics of explicit data (any input `load_batch` reads; request logs filtered alike)."""
    progress(f"computing reference statistics from {path}")
    batch = load_batch(path, model_name, logged_version)
    which = f", version {logged_version}'s requests" if logged_version is not None else ""
    description = f"{path} ({len(batch.images)} images{which})"
    if model_dir is None and batch.probabilities is not None:  # request logs with the answers given
        reference = build_reference(batch.images, None, None, drift, description + "; logged answers")
        return with_answers(reference, batch.probabilities, drift), None
    predict = model_predictor(model_dir) if model_dir else None
    return build_reference(batch.images, batch.images, predict, drift, description), predict
