"""DriftGate: stop (or warn about) a new span whose distribution moved from the data before it.

TFX's DistributionValidator compares the new span's image-feature statistics
with the previous span's and with the training window's (TFDV's drift
comparators: Jensen-Shannon divergence for the binned image features,
L-infinity for the class shares), and records anomalies; like
ExampleValidator, it never stops a run. This gate reads what it recorded and,
with `on_drift="stop"`, fails naming each feature that moved, the measured
distance and the threshold; with `"warn"` it logs the same and lets the span
train. A refused span is recorded in the span ledger (`core/ledger.py`) and
never joins a training window (`core/span_rules.py`).
"""

import logging
import os

from tensorflow_metadata.proto.v0 import anomalies_pb2, path_pb2, schema_pb2
from tfx.components.distribution_validator.executor import DEFAULT_FILE_NAME
from tfx.dsl.component.experimental.annotations import InputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.proto import distribution_validator_pb2
from tfx.types import artifact_utils, standard_artifacts
from tfx.utils import io_utils

from components.loop_state import record_refusal
from core.config import ON_DRIFT_STOP, SpansConfig
from core.errors import PipelineError
from core.image_features import FEATURE_NAMES
from core.vocabulary import LABEL_KEY

log = logging.getLogger(__name__)
MEASURES = {
    anomalies_pb2.DriftSkewInfo.Measurement.JENSEN_SHANNON_DIVERGENCE: "Jensen-Shannon divergence",
    anomalies_pb2.DriftSkewInfo.Measurement.L_INFTY: "L-infinity distance",
}


def make_drift_config(config: SpansConfig) -> distribution_validator_pb2.DistributionValidatorConfig:
    """TFDV drift comparators: Jensen-Shannon per binned image feature, L-infinity on the class shares."""
    features = []
    for name in FEATURE_NAMES:
        comparator = schema_pb2.FeatureComparator()
        comparator.jensen_shannon_divergence.threshold = config.drift_jsd_threshold
        features.append((name, comparator))
    classes = schema_pb2.FeatureComparator()
    classes.infinity_norm.threshold = config.label_linf_threshold
    features.append((LABEL_KEY, classes))
    return distribution_validator_pb2.DistributionValidatorConfig(
        default_slice_config=distribution_validator_pb2.DistributionValidatorConfig.DatasetConfig(
            feature=[
                distribution_validator_pb2.FeatureComparator(
                    path=path_pb2.Path(step=[name]), distribution_comparator=comparator
                )
                for name, comparator in features
            ]
        )
    )


class DataDriftError(PipelineError):
    """The new span drifted from the data before it; the message lists each feature that moved."""


def split_pair_anomalies(uri: str, split_names: str) -> dict[str, anomalies_pb2.Anomalies]:
    """The Anomalies proto DistributionValidator wrote for each split pair (`<uri>/SplitPair-<a>_<b>/`)."""
    result = {}
    for pair in artifact_utils.decode_split_names(split_names):
        path = os.path.join(uri, f"SplitPair-{pair}", DEFAULT_FILE_NAME)
        result[pair] = anomalies_pb2.Anomalies.FromString(io_utils.read_bytes_file(path))
    return result


def describe_drift(against: str, anomalies: anomalies_pb2.Anomalies) -> list[str]:
    """One line per feature that moved: measure, distance and threshold; and comparisons that failed."""
    lines = []
    for info in anomalies.drift_skew_info:
        feature = ".".join(info.path.step)
        for measurement in info.drift_measurements:
            if measurement.value > measurement.threshold:
                measure = MEASURES.get(measurement.type, str(measurement.type))
                lines.append(
                    f"against {against}, feature '{feature}': {measure} {measurement.value:.4f} > "
                    f"threshold {measurement.threshold:.4f}"
                )
    flagged = {".".join(info.path.step) for info in anomalies.drift_skew_info}
    for name, info in sorted(anomalies.anomaly_info.items()):
        if name not in flagged:  # e.g. "comparison could not be done": a feature missing on one side
            lines.extend(f"against {against}, feature '{name}': {r.short_description}" for r in info.reason)
    return lines


@component
def DriftGate(
    examples: InputArtifact[standard_artifacts.Examples],
    vs_previous_span: InputArtifact[standard_artifacts.ExampleAnomalies] = None,
    vs_window: InputArtifact[standard_artifacts.ExampleAnomalies] = None,
    on_drift: Parameter[str] = ON_DRIFT_STOP,
    ledger: Parameter[str] = "",
) -> None:
    """Fail (`on_drift="stop"`) or warn when either comparison found the new span drifted."""
    problems = []
    for against, artifact in (("the previous span", vs_previous_span), ("the training window", vs_window)):
        if artifact is not None:
            for anomalies in split_pair_anomalies(artifact.uri, artifact.split_names).values():
                problems.extend(describe_drift(against, anomalies))
    if not problems:
        return
    span = examples.get_int_custom_property("span")
    message = f"span {span} drifted from the data before it:\n  " + "\n  ".join(problems)
    if on_drift == ON_DRIFT_STOP:
        message += "\nstopped before Transform and Trainer (set --on-drift warn to train on it)"
        record_refusal(ledger, examples, "drift", message)
        raise DataDriftError(message)
    log.warning("%s\ntraining on it anyway (--on-drift warn)", message)
