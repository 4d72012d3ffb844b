"""The anomaly gate's description of TFDV anomalies, computed by TFDV on real statistics."""

import pytest
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import statistics_pb2

from components.anomaly_gate import describe_anomalies
from core.config import PipelineConfig


def stats_with_max_pixel(
    max_pixel: float, with_label: bool = True
) -> statistics_pb2.DatasetFeatureStatisticsList:
    """Statistics as TFDV computes them for 10 examples, the pixel maximum chosen by the test."""
    stats = statistics_pb2.DatasetFeatureStatisticsList()
    dataset = stats.datasets.add(num_examples=10)
    image = dataset.features.add(type=statistics_pb2.FeatureNameStatistics.INT)
    image.path.step.append("image")
    image.num_stats.common_stats.num_non_missing = 10
    image.num_stats.common_stats.min_num_values = 784
    image.num_stats.common_stats.max_num_values = 784
    image.num_stats.common_stats.tot_num_values = 7840
    image.num_stats.min = 0
    image.num_stats.max = max_pixel
    if with_label:
        label = dataset.features.add(type=statistics_pb2.FeatureNameStatistics.INT)
        label.path.step.append("label")
        label.num_stats.common_stats.num_non_missing = 10
        label.num_stats.common_stats.min_num_values = 1
        label.num_stats.common_stats.max_num_values = 1
        label.num_stats.min = 0
        label.num_stats.max = 9
    return stats


@pytest.fixture(scope="module")
def schema():
    return tfdv.load_schema_text(PipelineConfig().schema_path)


def test_clean_statistics_have_no_anomaly(schema):
    assert describe_anomalies("train", tfdv.validate_statistics(stats_with_max_pixel(255), schema)) == []


def test_pixel_out_of_range_names_split_feature_and_constraint(schema):
    lines = describe_anomalies("eval", tfdv.validate_statistics(stats_with_max_pixel(300), schema), schema)
    assert len(lines) == 1
    assert lines[0].startswith("split 'eval', feature 'image': Out-of-range values")
    assert "300" in lines[0]
    assert lines[0].endswith(
        "the schema expects int, values in 0..255, shape [784], present in every example"
    )


def test_missing_label_is_named(schema):
    lines = describe_anomalies(
        "train", tfdv.validate_statistics(stats_with_max_pixel(255, with_label=False), schema)
    )
    assert any(line.startswith("split 'train', feature 'label'") for line in lines)


def test_an_empty_split_is_an_anomaly(schema):
    empty = statistics_pb2.DatasetFeatureStatisticsList()
    empty.datasets.add(num_examples=0)
    anomalies = tfdv.validate_statistics(empty, schema)
    assert anomalies.data_missing and not anomalies.anomaly_info  # TFDV flags nothing else
    assert describe_anomalies("eval", anomalies) == [
        "split 'eval', data set: no examples (TFDV reports the data missing)"
    ]
