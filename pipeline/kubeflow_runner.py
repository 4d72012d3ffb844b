"""Compile the same pipeline for Kubeflow Pipelines v2 / Vertex AI Pipelines.

`create_pipeline` is unchanged; only the engine differs. TFX's
`KubeflowV2DagRunner` writes a pipeline-spec JSON in which every component runs
in the pipeline image (see `Dockerfile`); submit it with the KFP SDK or to
Vertex AI (`aiplatform.PipelineJob(template_path=...)`). On those platforms
the pipeline root, data and serving directories are `gs://` (or other TFX
filesystem) URIs, and ML Metadata is the platform's own: the SQLite path of the
local configuration is not used.

TFX's own CLI runs this file (it patches the runner to capture the spec):

    FMNIST_WORKDIR=gs://BUCKET/fmnist FMNIST_IMAGE=REGISTRY/fmnist/pipeline:TAG \
      tfx pipeline compile --engine vertex --pipeline_path pipeline/kubeflow_runner.py

`FMNIST_BEAM_RUNNER` and `FMNIST_BEAM_ARGS` choose the Beam runner (default
DirectRunner inside the component's container); `fmnist compile-kubeflow`
does the same with flags.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":  # run as a script (the tfx CLI puts this directory first on sys.path):
    _HERE = os.path.dirname(os.path.abspath(__file__))  # then `pipeline` would be pipeline/pipeline.py
    sys.path[:] = [os.path.dirname(_HERE), *(p for p in sys.path if os.path.abspath(p or ".") != _HERE)]

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


def config_from_environment(environ: dict[str, str]) -> tuple[PipelineConfig, str, str]:
    """The configuration, image and output path the `tfx` CLI run asks for through `FMNIST_*` variables."""
    missing = [name for name in ("FMNIST_WORKDIR", "FMNIST_IMAGE") if not environ.get(name)]
    if missing:
        raise SystemExit(f"set {' and '.join(missing)} (see pipeline/kubeflow_runner.py)")
    fields = {"workdir": environ["FMNIST_WORKDIR"], "schema_path": IMAGE_SCHEMA_PATH}
    if environ.get("FMNIST_BEAM_RUNNER"):
        fields["beam_runner"] = environ["FMNIST_BEAM_RUNNER"]
    if environ.get("FMNIST_BEAM_ARGS"):
        fields["beam_args"] = environ["FMNIST_BEAM_ARGS"]
    output = environ.get("FMNIST_PIPELINE_SPEC", "fashion-mnist-pipeline.json")
    return PipelineConfig(**fields), environ["FMNIST_IMAGE"], output


if __name__ == "__main__":
    config, image, output = config_from_environment(dict(os.environ))
    print(f"pipeline spec: {compile_kubeflow_v2(config, image, output)}", file=sys.stderr)
