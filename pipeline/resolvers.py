"""Resolver strategies: which spans train the model, and which model is the bar (and the warm start).

Both query ML Metadata (through `pipeline.metadata`) when TFX resolves a
node's inputs, so what they return is recorded as that node's inputs, and an
unchanged run resolves the same artifacts and stays cached.

- `SpanWindowStrategy`: TFX's `SpanRangeStrategy` (static or rolling
  `RangeConfig`) over the spans a run may use: spans refused by a data gate
  are excluded, only spans before a given one when asked (the window a new
  span joins), and of a span ingested twice only the newest artifact counts.
  (TFX 1.16's newer `rolling_range` resolver functions read the span from the
  artifact's typed property; ImportExampleGen 1.16 writes it as a custom
  property, which `SpanRangeStrategy` reads.)
- `ServedModelStrategy`: the model behind the version production traffic
  gets (the `stable` label of the rollout, else the newest version pushed),
  never merely "the last model the Evaluator blessed": a model that failed the
  serving check, was never promoted, or was rolled back is not the bar. When
  the served model was itself trained on the span being run (it was promoted
  since), the model it was measured against (or warm-started from) is
  returned instead, so a run with no new data resolves what the first run of
  that span resolved and stays fully cached.
"""

from __future__ import annotations

from typing import Any

import ml_metadata as mlmd
from tfx import types
from tfx.dsl.components.common.resolver import ResolverStrategy
from tfx.dsl.input_resolution.strategies.span_range_strategy import SpanRangeStrategy
from tfx.proto import range_config_pb2

from pipeline.metadata import Metadata, span_of
from serving.rollout import served_version

BASELINE, WARM_START = "baseline", "warm_start"


class SpanWindowStrategy(SpanRangeStrategy):
    """`SpanRangeStrategy` over usable spans: refused spans excluded, newest artifact per span."""

    def __init__(
        self,
        range_config: range_config_pb2.RangeConfig,
        exclude_spans: list[int] | None = None,
        before_span: int = 0,
    ):
        super().__init__(range_config=range_config)
        self._exclude = set(exclude_spans or ())
        self._before = before_span

    def _usable(self, artifacts: list[types.Artifact]) -> list[types.Artifact]:
        newest: dict[int, types.Artifact] = {}
        for artifact in sorted(artifacts, key=lambda a: a.id):
            span = span_of(artifact.mlmd_artifact)
            if span not in self._exclude and (not self._before or span < self._before):
                newest[span] = artifact
        return list(newest.values())

    def resolve_artifacts(
        self, store: mlmd.MetadataStore, input_dict: dict[str, list[types.Artifact]]
    ) -> dict[str, list[types.Artifact]] | None:
        return super().resolve_artifacts(store, {k: self._usable(v) for k, v in input_dict.items()})


class ServedModelStrategy(ResolverStrategy):
    """The Model behind the served version (see the module docstring); none before the first push."""

    def __init__(
        self, serving_dir: str, model_name: str, pipeline_name: str, span: int, role: str = BASELINE
    ):
        self.serving_dir = serving_dir
        self.model_name = model_name
        self.pipeline_name = pipeline_name
        self.span = span
        self.role = role

    def resolve_artifacts(
        self, store: mlmd.MetadataStore, input_dict: dict[str, list[types.Artifact]]
    ) -> dict[str, list[types.Artifact]]:
        metadata = Metadata(store, self.pipeline_name)
        found = served_model(metadata, served_version(self.serving_dir, self.model_name))
        if found is not None and max(metadata.training_spans(found), default=0) >= self.span:
            found = metadata.model_before(found, self.role == WARM_START)
        return {
            key: [a for a in artifacts if found is not None and a.id == found.id]
            for key, artifacts in input_dict.items()
        }


def served_model(metadata: Metadata, version: int | None) -> Any:
    """The Model artifact the Pusher pushed as `version` (None if this store did not push it)."""
    pushed = metadata.pushed_models().get(version) if version is not None else None
    pusher = metadata.producer(pushed) if pushed is not None else None
    return metadata.one(pusher.id, "model") if pusher is not None else None
