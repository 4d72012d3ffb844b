"""Compile the same pipeline for Kubeflow Pipelines v2 / Vertex AI Pipelines.

`create_pipeline` is unchanged; only the engine differs. TFX's
`KubeflowV2DagRunner` writes a pipeline-spec JSON in which every component runs
in the pipeline image (see `Dockerfile`); submit it with the KFP SDK or to
Vertex AI (`aiplatform.PipelineJob(template_path=...)`). On those platforms
the pipeline root, data and serving directories are `gs://` (or other TFX
filesystem) URIs, and ML Metadata is the platform's own: the SQLite path of the
local configuration is not used.
"""

from __future__ import annotations

import os

from tfx import v1 as tfx

from core.config import PipelineConfig, replace
from pipeline.pipeline import create_pipeline

IMAGE_SCHEMA_PATH = "/pipeline/schema/schema.pbtxt"  # where the Dockerfile puts schema/


def compile_kubeflow_v2(config: PipelineConfig, image: str, output_path: str) -> str:
    """Write the pipeline-spec JSON for `config` running in `image`; return its path.

    Kubeflow names allow only `[a-z0-9-]`, so `fashion_mnist` becomes `fashion-mnist`.
    """
    config = replace(config, pipeline_name=config.pipeline_name.replace("_", "-"))
    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=os.path.dirname(os.path.abspath(output_path)),
        output_filename=os.path.basename(output_path),
    )
    runner.run(create_pipeline(config, orchestrator="kubeflow_v2"), write_out=True)
    return output_path
