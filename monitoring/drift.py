"""Drift of a batch of images against the training data of the served model, with TFDV.

Method (the same for reference and batch):

1. Per image, the features of `components.image_features` plus, where a model
   is available, its predicted class and its confidence (top probability).
2. Each numeric feature is cut into `bins` fixed-width bins on [0, 1]. TFDV's
   numeric Jensen-Shannon divergence compares equal-width histograms whose
   ranges follow each sample's own minimum and maximum, and its re-bucketing
   reads 0.05-0.18 on clean samples of this data (measured); on shared fixed
   bins a clean sample of 200 reads below 0.03.
3. TFDV statistics for batch and reference; `tfdv.validate_statistics` with a
   drift comparator per feature: Jensen-Shannon divergence for the binned
   numeric features, L-infinity distance for the predicted class. Thresholds
   shrink with the batch size (`DriftConfig`).
4. Verdict: drift when TFDV flags at least one feature. Each flagged feature is
   listed with its distance and threshold.

The model-output reference is the model's answers on the held-out eval split,
not the training split: on its own training data a model is more confident than
on any new data, which would read as drift.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import math
import os
from collections.abc import Callable

import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import anomalies_pb2, statistics_pb2

from core import storage
from core.config import DriftConfig
from core.errors import InputError
from core.image_features import FEATURE_MEANINGS, FeatureMeaning, binned, binned_features, mean_image
from core.vocabulary import CLASS_NAMES, IMAGES_INPUT, IMAGES_SIGNATURE, PROBABILITIES_OUTPUT
from monitoring.batches import Batch

PREDICTED_CLASS = "predicted_class"
CONFIDENCE = "confidence"
CACHE_FORMAT = "1"  # bump when features or binning change, so old cached references are not reused
# Every compared feature in words and its axis in its own units (the model's features beside the image's).
MEANINGS: dict[str, FeatureMeaning] = {
    **FEATURE_MEANINGS,
    CONFIDENCE: FeatureMeaning(
        "the model's confidence: the probability of the class it answered", "top probability", 100, "%"
    ),
    PREDICTED_CLASS: FeatureMeaning("the class the model answered", "predicted class", 1),
}


@dataclasses.dataclass
class FeatureDrift:
    feature: str
    measure: str  # "Jensen-Shannon divergence" or "L-infinity distance"
    distance: float
    threshold: float
    drifted: bool


@dataclasses.dataclass
class Reference:
    """Statistics of the reference data and what a person needs to read them."""

    statistics: statistics_pb2.DatasetFeatureStatisticsList
    mean_image: np.ndarray
    description: str
    images: int


@dataclasses.dataclass
class DriftResult:
    drifted: bool
    rule: str
    features: list[FeatureDrift]
    batch_statistics: statistics_pb2.DatasetFeatureStatisticsList
    batch_mean_image: np.ndarray
    images: int
    bins: int  # fixed-width bins on [0, 1] of every numeric feature

    @property
    def drifted_features(self) -> list[FeatureDrift]:
        return [f for f in self.features if f.drifted]


def effective_size(batch_images: int, reference_images: int) -> float:
    """The sample size that sets the noise of a distance between two samples: 1 / (1/n + 1/m).

    Two empirical samples differ by chance through both: against a large
    reference (the training window) this is about the batch size; between two
    small samples (canary traffic against stable traffic) it is smaller, and
    the thresholds widen accordingly.
    """
    return 1.0 / (1.0 / batch_images + 1.0 / max(reference_images, 1))


def jsd_threshold(n: float, config: DriftConfig) -> float:
    return config.jsd_base + config.jsd_per_image / n


def linf_threshold(n: float, config: DriftConfig) -> float:
    return config.linf_base + config.linf_per_sqrt_image / math.sqrt(n)


def feature_frame(images: np.ndarray, probabilities: np.ndarray | None, bins: int) -> pd.DataFrame:
    """One row per image: binned image features, and the model's class and binned confidence if given."""
    columns = binned_features(images, bins)
    if probabilities is not None:
        columns.update(model_columns(probabilities, bins))
    return pd.DataFrame(columns)


def model_columns(probabilities: np.ndarray, bins: int) -> dict[str, np.ndarray]:
    names = np.array(CLASS_NAMES)
    return {
        PREDICTED_CLASS: names[np.argmax(probabilities, axis=1)],
        CONFIDENCE: binned(np.max(probabilities, axis=1), bins),
    }


def statistics_of(frame: pd.DataFrame) -> statistics_pb2.DatasetFeatureStatisticsList:
    return tfdv.generate_statistics_from_dataframe(frame)


def merge_statistics(
    *parts: statistics_pb2.DatasetFeatureStatisticsList,
) -> statistics_pb2.DatasetFeatureStatisticsList:
    """One data set's statistics holding the features of several (image features and model outputs)."""
    merged = statistics_pb2.DatasetFeatureStatisticsList()
    dataset = merged.datasets.add()
    dataset.CopyFrom(parts[0].datasets[0])
    for part in parts[1:]:
        dataset.features.extend(part.datasets[0].features)
    return merged


def compare(
    batch: statistics_pb2.DatasetFeatureStatisticsList,
    reference: statistics_pb2.DatasetFeatureStatisticsList,
    images: float,
    config: DriftConfig,
) -> list[FeatureDrift]:
    """TFDV's drift comparison of every feature present in both, with size-aware thresholds."""
    schema = tfdv.infer_schema(reference)
    batch_features = {f.path.step[0] for f in batch.datasets[0].features}
    for feature in schema.feature:
        if feature.name == PREDICTED_CLASS:
            feature.drift_comparator.infinity_norm.threshold = linf_threshold(images, config)
        else:
            feature.drift_comparator.jensen_shannon_divergence.threshold = jsd_threshold(images, config)
    anomalies = tfdv.validate_statistics(batch, schema, previous_statistics=reference)
    kinds = anomalies_pb2.DriftSkewInfo.Measurement
    names = {
        kinds.L_INFTY: "L-infinity distance",
        kinds.JENSEN_SHANNON_DIVERGENCE: "Jensen-Shannon divergence",
    }
    results = []
    for info in anomalies.drift_skew_info:
        feature = info.path.step[0]
        if feature not in batch_features:
            continue
        for measurement in info.drift_measurements:
            results.append(
                FeatureDrift(
                    feature=feature,
                    measure=names.get(measurement.type, str(measurement.type)),
                    distance=round(measurement.value, 4),
                    threshold=round(measurement.threshold, 4),
                    drifted=measurement.value > measurement.threshold,
                )
            )
    return sorted(results, key=lambda r: r.distance / r.threshold, reverse=True)


def answered(batch: Batch, predict: Callable | None) -> Batch:
    """The batch with the model's answers: logged ones if it has them, else `predict`'s (if a model is given).

    Asked once, so that the drift comparison and the accuracy estimate read the same answers.
    """
    if batch.probabilities is not None or predict is None:
        return batch
    return dataclasses.replace(batch, probabilities=predict(batch.images))


def check_drift(
    batch: Batch, reference: Reference, config: DriftConfig, predict: Callable | None
) -> DriftResult:
    """Compare `batch` with `reference`; `predict` (images -> probabilities) adds the model features."""
    n = len(batch.images)
    if n < config.min_images:
        raise InputError(
            f"{batch.source}: {n} images; at least {config.min_images} are needed to judge drift"
        )
    probabilities = batch.probabilities
    if probabilities is None and predict is not None:
        probabilities = predict(batch.images)
    has_model_reference = any(
        f.path.step[0] == PREDICTED_CLASS for f in reference.statistics.datasets[0].features
    )
    frame = feature_frame(batch.images, probabilities if has_model_reference else None, config.bins)
    batch_statistics = statistics_of(frame)
    size = effective_size(n, reference.images)
    features = compare(batch_statistics, reference.statistics, size, config)
    jsd = f"{config.jsd_base:g} + {config.jsd_per_image:g}/n = {jsd_threshold(size, config):.4f}"
    linf = (
        f"{config.linf_base:g} + {config.linf_per_sqrt_image:g}/sqrt(n) = {linf_threshold(size, config):.4f}"
    )
    rule = (
        f"drift when TFDV flags any feature: a Jensen-Shannon divergence above {jsd}, or a "
        f"predicted-class L-infinity distance above {linf} (n = 1/(1/{n} + 1/{reference.images}) = "
        f"{size:.0f}: {n} images against a reference of {reference.images})"
    )
    return DriftResult(
        drifted=any(f.drifted for f in features),
        rule=rule,
        features=features,
        batch_statistics=batch_statistics,
        batch_mean_image=mean_image(batch.images),
        images=n,
        bins=config.bins,
    )


# --- the reference -------------------------------------------------------------------------------
def model_predictor(model_dir: str, batch_size: int = 1024) -> Callable[[np.ndarray], np.ndarray]:
    """images -> probabilities through the exported model's `predict_images` signature.

    The model is loaded on the first call: a report on logged answers with a
    cached reference never needs it.
    """

    @functools.cache
    def signature():
        signatures = tf.saved_model.load(model_dir).signatures
        if IMAGES_SIGNATURE not in signatures:
            raise InputError(
                f"{model_dir}: the model has no '{IMAGES_SIGNATURE}' signature "
                f"(signatures: {sorted(signatures)})"
            )
        return signatures[IMAGES_SIGNATURE]

    def predict(images: np.ndarray) -> np.ndarray:
        parts = [
            signature()(**{IMAGES_INPUT: tf.constant(images[i : i + batch_size], tf.uint8)})[
                PROBABILITIES_OUTPUT
            ].numpy()
            for i in range(0, len(images), batch_size)
        ]
        return np.concatenate(parts)

    return predict


def build_reference(
    training_images: np.ndarray,
    held_out_images: np.ndarray | None,
    predict: Callable | None,
    config: DriftConfig,
    description: str,
) -> Reference:
    """Statistics of the training images' features, and of the model's answers on held-out images."""
    statistics = statistics_of(feature_frame(training_images, None, config.bins))
    reference = Reference(statistics, mean_image(training_images), description, len(training_images))
    return with_model_outputs(reference, held_out_images, predict, config)


def with_model_outputs(
    reference: Reference, held_out_images: np.ndarray | None, predict: Callable | None, config: DriftConfig
) -> Reference:
    """Add the statistics of the model's answers on held-out images to a reference, if there is a model."""
    if predict is None or held_out_images is None:
        return reference
    return with_answers(reference, predict(held_out_images), config)


def with_answers(reference: Reference, probabilities: np.ndarray, config: DriftConfig) -> Reference:
    """Add the statistics of given model answers (e.g. logged ones) to a reference."""
    answers = statistics_of(pd.DataFrame(model_columns(probabilities, config.bins)))
    return dataclasses.replace(reference, statistics=merge_statistics(reference.statistics, answers))


def cached_reference(cache_dir: str, key_parts: list[str], build: Callable[[], Reference]) -> Reference:
    """The reference from `cache_dir` if built before with the same inputs, else built and saved."""
    key = hashlib.sha256("\0".join([CACHE_FORMAT, *key_parts]).encode()).hexdigest()[:16]
    directory = os.path.join(cache_dir, key)
    names = ("statistics.pb", "mean_image.npy", "about.txt")
    if all(storage.exists(os.path.join(directory, name)) for name in names):
        statistics = statistics_pb2.DatasetFeatureStatisticsList.FromString(
            storage.read_bytes(os.path.join(directory, "statistics.pb"))
        )
        mean_image = np.load(io.BytesIO(storage.read_bytes(os.path.join(directory, "mean_image.npy"))))
        description, images = storage.read_text(os.path.join(directory, "about.txt")).rsplit("\n", 1)
        return Reference(statistics, mean_image, description, int(images))
    reference = build()
    staging = os.path.join(cache_dir, f".tmp-{key}-{os.getpid()}")
    storage.make_dirs(staging)
    storage.write_bytes(os.path.join(staging, "statistics.pb"), reference.statistics.SerializeToString())
    mean_image = io.BytesIO()
    np.save(mean_image, reference.mean_image)
    storage.write_bytes(os.path.join(staging, "mean_image.npy"), mean_image.getvalue())
    storage.write_text(os.path.join(staging, "about.txt"), f"{reference.description}\n{reference.images}")
    if storage.exists(directory):  # another process built it meanwhile
        storage.remove_tree(staging)
    else:
        storage.rename_dir(staging, directory)
    return reference
