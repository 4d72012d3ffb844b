"""ServedModelEvaluator: TFX's Evaluator (TFMA) against what serves; change gates stating their uncertainty.

The Evaluator's `baseline_model` is the ServedModel artifact
(`components/served_model.py`), which is empty before the first push. TFX's
Evaluator takes a baseline it is given at its word and would fail to load an
empty one; without one it skips change thresholds ("rubber stamp"), which is
what a first push needs. So this executor drops a baseline that holds no
SavedModel before handing over to TFX's own executor.

TFMA measures and gates the floor; the change thresholds of the EvalConfig
(`pipeline/evaluation.py`: overall accuracy at most `max_accuracy_drop`, each
class at most `max_class_drop` below the served model) are taken out of
TFMA's hands, because TFMA compares point estimates. After TFMA, this
executor answers the gold set with both models, measures each one's accuracy
and the paired change with 90 % intervals (`components/gold_comparison.py`),
writes that as GOLD_COMPARISON_FILE into the `evaluation` output, and turns
the blessing TFX wrote into NOT_BLESSED when a change gate refuses: the
`blessed` property the Pusher and ModelVerdict read, and the NOT_BLESSED file
in place of BLESSED. A refusal by TFMA (the floor) stands as TFMA wrote it.
"""

import json
import logging
import os
from typing import Any

import numpy as np
import tensorflow_model_analysis as tfma
from tfx import types
from tfx.components import Evaluator
from tfx.components.evaluator import constants
from tfx.components.evaluator import executor as tfx_evaluator
from tfx.dsl.components.base import executor_spec
from tfx.dsl.io import fileio
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, path_utils, proto_utils

from components.gold_comparison import GOLD_COMPARISON_FILE, GoldComparison, compare_on_gold
from components.model_answers import labels_and_answers
from components.served_model import served_model_dir
from core import storage
from core.errors import PipelineError
from core.examples import split_files
from core.vocabulary import LABEL_KEY

log = logging.getLogger(__name__)
DEFAULT_SPLITS = ["eval"]  # TFX's Evaluator reads this split when `example_splits` is not set


def take_change_thresholds(eval_config: tfma.EvalConfig) -> tuple[float | None, float | None]:
    """Remove the change thresholds from `eval_config`; return the allowed drops (overall, per class).

    Only the absolute change thresholds this project sets (on the overall
    slice and on the label slices) are understood; any other change threshold
    is a bug in the configuration's construction, not a user's input.
    """
    overall = per_class = None
    for metrics_spec in eval_config.metrics_specs:
        for metric in metrics_spec.metrics:
            for per_slice in metric.per_slice_thresholds:
                if not per_slice.threshold.HasField("change_threshold"):
                    continue
                drop = -per_slice.threshold.change_threshold.absolute.value
                keys = [list(spec.feature_keys) for spec in per_slice.slicing_specs]
                if keys == [[]]:
                    overall = drop
                elif keys == [[LABEL_KEY]]:
                    per_class = drop
                else:
                    raise PipelineError(
                        f"a change threshold on slices {keys}: only overall and per label are paired"
                    )
                per_slice.threshold.ClearField("change_threshold")
    return overall, per_class


def gold_files(examples: list[types.Artifact], exec_properties: dict[str, Any]) -> list[str]:
    """The files of the splits the Evaluator reads (`example_splits`, as TFX's executor picks them)."""
    splits = json.loads(exec_properties.get(standard_component_specs.EXAMPLE_SPLITS_KEY) or "null")
    return [
        f
        for split in splits or DEFAULT_SPLITS
        for f in split_files(artifact_utils.get_split_uri(examples, split))
    ]


def refuse_blessing(blessing: types.Artifact) -> None:
    """Turn the blessing TFX wrote into NOT_BLESSED: its `blessed` property and its marker file."""
    blessed_file = os.path.join(blessing.uri, constants.BLESSED_FILE_NAME)
    if fileio.exists(blessed_file):
        fileio.remove(blessed_file)
    io_utils.write_string_file(os.path.join(blessing.uri, constants.NOT_BLESSED_FILE_NAME), "")
    blessing.set_int_custom_property(constants.ARTIFACT_PROPERTY_BLESSED_KEY, constants.NOT_BLESSED_VALUE)


class ServedBaselineExecutor(tfx_evaluator.Executor):
    """TFX's Evaluator executor: no baseline when nothing serves; the change gates paired on the gold set."""

    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        key = standard_component_specs.BASELINE_MODEL_KEY
        baseline = input_dict.get(key) or []
        served = served_model_dir(baseline[0]) if baseline else None
        if baseline and served is None:
            input_dict = {k: v for k, v in input_dict.items() if k != key}
        eval_config = tfma.EvalConfig()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.EVAL_CONFIG_KEY], eval_config)
        max_drops = take_change_thresholds(eval_config)
        tfma_config = {standard_component_specs.EVAL_CONFIG_KEY: proto_utils.proto_to_json(eval_config)}
        super().Do(input_dict, output_dict, {**exec_properties, **tfma_config})
        comparison = compare_on_gold(*self._answers(input_dict, served, exec_properties), *max_drops)
        self._record(comparison, output_dict)

    @staticmethod
    def _answers(
        input_dict: dict[str, list[types.Artifact]], served: str | None, exec_properties: dict[str, Any]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The gold labels, the candidate's answers and the served model's (None: nothing serves), paired."""
        files = gold_files(input_dict[standard_component_specs.EXAMPLES_KEY], exec_properties)
        model = artifact_utils.get_single_uri(input_dict[standard_component_specs.MODEL_KEY])
        labels, candidate = labels_and_answers(path_utils.serving_model_path(model), files)
        if served is None:
            return labels, candidate, None
        served_labels, served_answers = labels_and_answers(served, files)
        if not np.array_equal(served_labels, labels):  # the same files, read in the same order
            raise RuntimeError("the gold set read twice gave different labels: the answers are not paired")
        return labels, candidate, served_answers

    @staticmethod
    def _record(comparison: GoldComparison, output_dict: dict[str, list[types.Artifact]]) -> None:
        """Write the comparison beside TFMA's results; a refused change gate un-blesses the model."""
        evaluation = artifact_utils.get_single_uri(output_dict[standard_component_specs.EVALUATION_KEY])
        storage.write_text(os.path.join(evaluation, GOLD_COMPARISON_FILE), comparison.to_json())
        refusals = comparison.refusals()
        blessing = output_dict.get(standard_component_specs.BLESSING_KEY) or []
        for line in refusals:
            log.info("change gate refused: %s", line)
        if refusals and blessing:
            refuse_blessing(blessing[0])


class ServedModelEvaluator(Evaluator):
    """TFX's Evaluator component with `ServedBaselineExecutor`."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(ServedBaselineExecutor)
