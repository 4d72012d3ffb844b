"""The pipeline's own artifact types, named as Kubeflow V2 / Vertex AI require (`<namespace>.<Name>`).

- `DataDirectory`: the data directory a run looked at (TFX's `Importer`
  records it, re-imported every run, so the span planner after it runs on
  every run, as it must: only it can notice a new span).
- `SpanPlan`: what the span planner decided for a run (which span, new or
  not, what it is compared with, which spans never train), in `plan.json`
  and as custom properties, so the run report and lineage read it from ML
  Metadata.
"""

from tfx.types.artifact import Artifact


class DataDirectory(Artifact):
    TYPE_NAME = "fmnist.DataDirectory"


class SpanPlan(Artifact):
    TYPE_NAME = "fmnist.SpanPlan"
