"""ImageFeatureStatistics: TFDV statistics of the image-level features of every split.

StatisticsGen describes the raw `image` feature, 784 pixels pooled, which hides
most shifts a person would notice. This component computes the features of
`components/image_features.py` for each split of the examples, bins them, and
writes TFDV statistics (`ImageFeatureStats.pb`) and the split's mean image
(`mean_image.npy`) per `Split-<name>/` directory of an ExampleStatistics
artifact. `fmnist drift` finds this artifact through MLMD lineage from the
served model and uses the training split's statistics as its reference.
"""

import components  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow)

# isort: split
import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_data_validation as tfdv
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts

from components.dataset import read_example_images as examples_images
from components.features import MAX_PIXEL
from components.image_features import binned_features

STATS_FILE, MEAN_IMAGE_FILE = "ImageFeatureStats.pb", "mean_image.npy"


def split_files(examples_uri: str, split: str) -> list[Path]:
    directory = Path(examples_uri) / f"Split-{split}"
    files = sorted(p for p in directory.glob("*") if p.is_file())
    if not files:
        raise FileNotFoundError(f"{directory}: no example files (was the pipeline root moved?)")
    return files


def write_split_statistics(images: np.ndarray, directory: str, bins: int) -> None:
    statistics = tfdv.generate_statistics_from_dataframe(pd.DataFrame(binned_features(images, bins)))
    tf.io.gfile.makedirs(directory)
    with tf.io.gfile.GFile(os.path.join(directory, STATS_FILE), "wb") as f:
        f.write(statistics.SerializeToString())
    buffer = io.BytesIO()
    np.save(buffer, images.mean(axis=0) / MAX_PIXEL)
    with tf.io.gfile.GFile(os.path.join(directory, MEAN_IMAGE_FILE), "wb") as f:
        f.write(buffer.getvalue())


@component
def ImageFeatureStatistics(
    examples: InputArtifact[standard_artifacts.Examples],
    statistics: OutputArtifact[standard_artifacts.ExampleStatistics],
    bins: Parameter[int] = 20,
) -> None:
    """Binned image-feature statistics and the mean image of each split."""
    splits = artifact_utils.decode_split_names(examples.split_names)
    for split in splits:
        images = examples_images(split_files(examples.uri, split))
        write_split_statistics(images, os.path.join(statistics.uri, f"Split-{split}"), bins)
    statistics.split_names = artifact_utils.encode_split_names(splits)
    statistics.set_int_custom_property("bins", bins)
