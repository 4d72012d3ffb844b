"""ImageFeatureStatistics: TFDV statistics of the image-level features (and class shares) of examples.

StatisticsGen describes the raw `image` feature, 784 pixels pooled, which hides
most shifts a person would notice. This component computes the features of
`core/image_features.py` for each split of its examples (pooled over every
Examples artifact it is given: one span, or a window of spans), bins them, adds
the class of each example (`label`, by name), and writes them as an
ExampleStatistics artifact laid out as TFX's StatisticsGen lays out its own
(`Split-<name>/FeatureStats.pb`, a `DatasetFeatureStatisticsList`), so any
standard consumer reads it: TFX's DistributionValidator compares a new span
with the spans before it, and `fmnist drift` finds the training window's
statistics through MLMD lineage and uses them as its reference. The split's
mean image (`mean_image.npy`) is written beside them for the drift report's
pictures.
"""

import io
import os

import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_data_validation as tfdv
from tfx.components.statistics_gen import stats_artifact_utils
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts

from core.examples import read_labelled_images, split_files
from core.image_features import binned_features, mean_image
from core.vocabulary import CLASS_NAMES, LABEL_KEY

MEAN_IMAGE_FILE = "mean_image.npy"
BINS_PROPERTY = "bins"


def write_split_statistics(images: np.ndarray, labels: np.ndarray, directory: str, bins: int) -> None:
    columns = binned_features(images, bins)
    columns[LABEL_KEY] = np.array(CLASS_NAMES)[labels]
    statistics = tfdv.generate_statistics_from_dataframe(pd.DataFrame(columns))
    tf.io.gfile.makedirs(directory)
    with tf.io.gfile.GFile(os.path.join(directory, stats_artifact_utils.BINARY_PB_BASENAME), "wb") as f:
        f.write(statistics.SerializeToString())
    buffer = io.BytesIO()
    np.save(buffer, mean_image(images))
    with tf.io.gfile.GFile(os.path.join(directory, MEAN_IMAGE_FILE), "wb") as f:
        f.write(buffer.getvalue())


@component
def ImageFeatureStatistics(
    examples: InputArtifact[list[standard_artifacts.Examples]],
    statistics: OutputArtifact[standard_artifacts.ExampleStatistics],
    bins: Parameter[int] = 20,
) -> None:
    """Binned image-feature statistics, class shares and the mean image of each split, over all `examples`."""
    splits = sorted(
        {s for artifact in examples for s in artifact_utils.decode_split_names(artifact.split_names)}
    )
    statistics.split_names = artifact_utils.encode_split_names(splits)
    statistics.span = max(artifact.get_int_custom_property("span") for artifact in examples)
    for split in splits:
        files = [
            file
            for artifact in examples
            if split in artifact_utils.decode_split_names(artifact.split_names)
            for file in split_files(artifact_utils.get_split_uri([artifact], split))
        ]
        images, labels = read_labelled_images(files)
        write_split_statistics(images, labels, artifact_utils.get_split_uri([statistics], split), bins)
    statistics.set_int_custom_property(BINS_PROPERTY, bins)
