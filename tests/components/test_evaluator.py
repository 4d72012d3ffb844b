"""The Evaluator's executor around TFMA: the empty baseline dropped, the change gates paired on the gold set.

TFX's own Do (TFMA) is replaced by a stand-in that blesses, as TFMA does when the floor holds; what is
tested is what this project's executor adds: which config TFMA gets, the comparison it writes, and the
blessing it withdraws. The last tests run TFMA itself, on what the configuration asks it to measure.
"""

import json
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics.multi_class_confusion_matrix_plot import (
    MULTI_CLASS_CONFUSION_MATRIX_PLOT_NAME,
)
from tfx.components.evaluator import constants
from tfx.components.evaluator import executor as tfx_evaluator
from tfx.types import artifact_utils, standard_artifacts, standard_component_specs
from tfx.utils import proto_utils

from components.evaluation_metrics import PER_CLASS_METRICS, TOP_LABEL_CALIBRATION
from components.evaluator import ServedBaselineExecutor, take_change_thresholds
from components.gold_comparison import GOLD_COMPARISON_FILE, GoldComparison
from core.config import EvaluationConfig
from core.vocabulary import CLASS_NAMES, NUM_CLASSES
from pipeline.evaluation import ACCURACY_METRIC, accuracy_by_slice, make_eval_config
from tests.components.stand_in_models import save_pixel_model, write_examples

SHIRT = CLASS_NAMES.index("Shirt")
PER_CLASS = 30
SPLIT = "test"


def artifact(kind, uri: Path):
    made = kind()
    made.uri = str(uri)
    uri.mkdir(parents=True, exist_ok=True)
    return made


@pytest.fixture
def tfma_blesses(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """TFX's Do replaced: it records what it was given and blesses, as TFMA does when the floor holds."""
    calls = []

    def bless(self, input_dict, output_dict, exec_properties):
        calls.append({"inputs": set(input_dict), "eval_config": exec_properties["eval_config"]})
        blessing = output_dict[standard_component_specs.BLESSING_KEY][0]
        Path(blessing.uri, constants.BLESSED_FILE_NAME).write_text("")
        blessing.set_int_custom_property(constants.ARTIFACT_PROPERTY_BLESSED_KEY, constants.BLESSED_VALUE)

    monkeypatch.setattr(tfx_evaluator.Executor, "Do", bless)
    return calls


def evaluate(tmp_path: Path, shirts_wrong: int, served: bool = True) -> tuple[GoldComparison, object]:
    """A gold set of 30 images per class; the candidate misses `shirts_wrong` shirts the served model gets."""
    labels = np.repeat(np.arange(NUM_CLASSES), PER_CLASS)
    second = np.zeros_like(labels)
    second[np.flatnonzero(labels == SHIRT)[:shirts_wrong]] = 1
    gold = artifact(standard_artifacts.Examples, tmp_path / "gold")
    gold.split_names = artifact_utils.encode_split_names([SPLIT])
    write_examples(tmp_path / "gold" / f"Split-{SPLIT}" / "data.tfrecord.gz", labels, labels, second)
    candidate = artifact(standard_artifacts.Model, tmp_path / "candidate")
    save_pixel_model(tmp_path / "candidate" / "Format-Serving", follows_second=True)
    baseline = artifact(standard_artifacts.Model, tmp_path / "served")  # empty: nothing serves
    if served:
        save_pixel_model(tmp_path / "served" / "Format-Serving")
    evaluation = artifact(standard_artifacts.ModelEvaluation, tmp_path / "evaluation")
    blessing = artifact(standard_artifacts.ModelBlessing, tmp_path / "blessing")
    ServedBaselineExecutor().Do(
        {"examples": [gold], "model": [candidate], "baseline_model": [baseline]},
        {"evaluation": [evaluation], "blessing": [blessing]},
        {
            "eval_config": proto_utils.proto_to_json(make_eval_config(EvaluationConfig())),
            "example_splits": json.dumps([SPLIT]),
        },
    )
    written = json.loads(Path(evaluation.uri, GOLD_COMPARISON_FILE).read_text())
    return GoldComparison.from_dict(written), blessing


def blessed(blessing) -> bool:
    files = set(os.listdir(blessing.uri))
    value = blessing.get_int_custom_property(constants.ARTIFACT_PROPERTY_BLESSED_KEY)
    assert files == {constants.BLESSED_FILE_NAME if value else constants.NOT_BLESSED_FILE_NAME}
    return value == constants.BLESSED_VALUE


def test_tfma_gates_the_floor_and_the_change_thresholds_are_taken_out_of_its_config(
    tmp_path: Path, tfma_blesses: list
):
    evaluate(tmp_path, shirts_wrong=0)
    (call,) = tfma_blesses
    config = proto_utils.json_to_proto(call["eval_config"], tfma.EvalConfig())
    thresholds = [
        t.threshold for s in config.metrics_specs for m in s.metrics for t in m.per_slice_thresholds
    ]
    assert not any(t.HasField("change_threshold") for t in thresholds)
    floors = [t.value_threshold.lower_bound.value for t in thresholds if t.HasField("value_threshold")]
    assert floors == [EvaluationConfig().accuracy_floor]


def test_the_change_thresholds_read_back_as_the_configured_allowances():
    config = EvaluationConfig(max_accuracy_drop=0.01, max_class_drop=0.07)
    assert take_change_thresholds(make_eval_config(config)) == pytest.approx((0.01, 0.07))


def test_a_class_drop_within_chance_keeps_the_blessing(tmp_path: Path, tfma_blesses: list):
    comparison, blessing = evaluate(tmp_path, shirts_wrong=2)
    shirt = comparison.per_class["Shirt"]
    assert shirt.change.value == pytest.approx(-2 / PER_CLASS) and shirt.examples == PER_CLASS
    assert shirt.served.value == 1.0 and shirt.candidate.value == pytest.approx(1 - 2 / PER_CLASS)
    assert not shirt.refused and blessed(blessing)


def test_a_class_drop_clearly_beyond_the_allowance_withdraws_the_blessing(tmp_path: Path, tfma_blesses: list):
    comparison, blessing = evaluate(tmp_path, shirts_wrong=12)
    assert [name for name, f in comparison.per_class.items() if f.refused] == ["Shirt"]
    assert not blessed(blessing)


def test_an_empty_served_model_is_no_baseline_and_there_is_no_change_to_judge(
    tmp_path: Path, tfma_blesses: list
):
    comparison, blessing = evaluate(tmp_path, shirts_wrong=PER_CLASS, served=False)
    (call,) = tfma_blesses
    assert standard_component_specs.BASELINE_MODEL_KEY not in call["inputs"]
    assert comparison.overall.served is None and comparison.per_class["Shirt"].candidate.value == 0.0
    assert blessed(blessing)


def models_measured(evaluation: Path) -> dict[str, set[str]]:
    """Metric or plot name -> the models TFMA measured it for ("" alone, or "candidate" and/or "baseline")."""
    models = defaultdict(set)
    for slice_metrics in tfma.load_metrics(str(evaluation)):
        for kv in slice_metrics.metric_keys_and_values:
            if not kv.key.is_diff:
                models[kv.key.name].add(kv.key.model_name)
    for slice_plots in tfma.load_plots(str(evaluation)):
        for kv in slice_plots.plot_keys_and_values:
            models[kv.key.name].add(kv.key.model_name)
    return models


def test_with_a_served_model_tfma_measures_the_per_class_metrics_of_the_candidate_alone(tmp_path: Path):
    evaluate(tmp_path, shirts_wrong=0)  # TFMA itself: no stand-in for TFX's Do
    measured = models_measured(tmp_path / "evaluation")
    assert measured[ACCURACY_METRIC] == {tfma.CANDIDATE_KEY, tfma.BASELINE_KEY}
    for name in [
        *(m.key for m in PER_CLASS_METRICS.values()),
        MULTI_CLASS_CONFUSION_MATRIX_PLOT_NAME,
        TOP_LABEL_CALIBRATION,
    ]:
        assert measured[name] == {tfma.CANDIDATE_KEY}, name
    report = accuracy_by_slice(str(tmp_path / "evaluation"))
    assert set(report["per_class_binary"]) == set(CLASS_NAMES) and report["accuracy"] == 1.0


def test_without_a_served_model_tfma_still_measures_the_per_class_metrics(tmp_path: Path):
    evaluate(tmp_path, shirts_wrong=0, served=False)
    measured = models_measured(tmp_path / "evaluation")
    assert all(measured[metric.key] == {""} for metric in PER_CLASS_METRICS.values())
    assert set(accuracy_by_slice(str(tmp_path / "evaluation"))["per_class_binary"]) == set(CLASS_NAMES)


def test_tfma_does_not_reload_the_model_for_the_metrics_compiled_into_it(tmp_path: Path):
    """TFMA computes a Keras model's compiled metrics by loading the model in each metric combiner."""
    shared = tfma.default_eval_shared_model(
        eval_saved_model_path=save_pixel_model(tmp_path / "model"),
        eval_config=make_eval_config(EvaluationConfig()),
    )
    assert shared.include_default_metrics is False
