"""Which blessed model the Evaluator compares a candidate with.

TFX's LatestBlessedModelStrategy returns the newest blessed model, which after
the first run is the cached candidate itself: the Evaluator then re-runs to
compare a model with itself and the rerun is not cached. This strategy returns
the newest blessed model *other than the newest model*; the pipeline runs it
after the Trainer, so the newest model is this run's candidate. An unchanged
rerun therefore resolves the same baseline as the run before it and every
component is cached, while a new candidate is still compared with the last
blessed one.
"""

from __future__ import annotations

import components  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow)

# isort: split
from tfx import types
from tfx.dsl.input_resolution.strategies.latest_blessed_model_strategy import LatestBlessedModelStrategy


class PreviousBlessedModelStrategy(LatestBlessedModelStrategy):
    """The latest blessed Model and its ModelBlessing, excluding the newest Model."""

    def _resolve(
        self,
        input_dict: dict[str, list[types.Artifact]],
        model_channel_key: str,
        model_blessing_channel_key: str,
    ):
        models = sorted(input_dict[model_channel_key], key=lambda a: a.id)
        candidates = dict(input_dict)
        candidates[model_channel_key] = models[:-1]
        return super()._resolve(candidates, model_channel_key, model_blessing_channel_key)
