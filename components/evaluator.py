"""ServedModelEvaluator: TFX's Evaluator (TFMA), measuring the candidate against what serves, if anything.

The Evaluator's `baseline_model` is the ServedModel artifact
(`components/served_model.py`), which is empty before the first push. TFX's
Evaluator takes a baseline it is given at its word and would fail to load an
empty one; without one it skips change thresholds ("rubber stamp"), which is
what a first push needs. So this executor drops a baseline that holds no
SavedModel before handing over to TFX's own executor; everything else (TFMA,
thresholds, the blessing and its `baseline_model` property) is TFX's.
"""

from typing import Any

from tfx import types
from tfx.components import Evaluator
from tfx.components.evaluator import executor as tfx_evaluator
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_component_specs

from components.served_model import served_model_dir


class ServedBaselineExecutor(tfx_evaluator.Executor):
    """TFX's Evaluator executor, with an empty baseline (nothing serves yet) treated as no baseline."""

    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        key = standard_component_specs.BASELINE_MODEL_KEY
        baseline = input_dict.get(key) or []
        if baseline and served_model_dir(baseline[0]) is None:
            input_dict = {k: v for k, v in input_dict.items() if k != key}
        super().Do(input_dict, output_dict, exec_properties)


class ServedModelEvaluator(Evaluator):
    """TFX's Evaluator component with `ServedBaselineExecutor`."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(ServedBaselineExecutor)
