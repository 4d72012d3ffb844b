"""Compile the same pipeline for Kubeflow Pipelines v2 / Vertex AI Pipelines, and prove nothing was dropped.

`create_pipeline(config)` is the DAG LocalDagRunner runs, with the same steps
and inputs. What differs: the pipeline's name (`kubeflow_config`: Kubeflow
allows no underscores), no ML Metadata connection (the platform brings its
own), and the paths and Beam arguments of the configuration given, `gs://`
and the image's schema (`IMAGE_SCHEMA_PATH`) when compiled by `fmnist
compile-kubeflow` or the `tfx` CLI below. TFX's `KubeflowV2DagRunner` writes
a pipeline-spec JSON in which every component runs in the pipeline image
(see `Dockerfile`); submit it with the KFP SDK or to Vertex AI
(`aiplatform.PipelineJob(template_path=...)`). On
those platforms the pipeline root, data and serving directories are `gs://`
(or other TFX filesystem) URIs, and ML Metadata is the platform's own.

The compiler silently leaves out what it cannot express (a custom resolver, an
input of an unsupported kind), and a gate without its inputs passes
everything. So after compiling, every node of the pipeline definition is
looked up among the spec's tasks, and every input it declares among that
task's input artifacts; anything missing is refused (`ReducedSpecError`,
naming each node and input) unless the caller allows a reduced spec, in which
case it is returned for the caller to print.

TFX's own CLI runs this file (it patches the runner to capture the spec):

    FMNIST_WORKDIR=gs://BUCKET/fmnist FMNIST_IMAGE=REGISTRY/fmnist/pipeline:TAG \
      tfx pipeline compile --engine vertex --pipeline_path pipeline/kubeflow_runner.py

`FMNIST_BEAM_RUNNER` and `FMNIST_BEAM_ARGS` choose the Beam runner (default
DirectRunner inside the component's container); `fmnist compile-kubeflow`
does the same with flags.
"""

from __future__ import annotations

import json
import os
import sys

from tfx import v1 as tfx

from core import storage
from core.config import PipelineConfig, replace
from core.errors import InputError
from pipeline.definition import create_pipeline

IMAGE_SCHEMA_PATH = "/pipeline/schema/schema.pbtxt"  # where the Dockerfile puts schema/


class ReducedSpecError(InputError):
    """The compiled spec lacks nodes or inputs the pipeline definition has; the message names each."""


def kubeflow_config(config: PipelineConfig) -> PipelineConfig:
    """Kubeflow names allow only `[a-z0-9-]`, so `fashion_mnist` becomes `fashion-mnist`."""
    return replace(config, pipeline_name=config.pipeline_name.replace("_", "-"))


def spec_tasks(spec: dict) -> dict[str, set[str]]:
    """Task name -> the input artifact keys of that task, in a KFP v2 pipeline spec."""
    tasks = spec["pipelineSpec"]["root"]["dag"]["tasks"]
    return {name: set(task.get("inputs", {}).get("artifacts", {})) for name, task in tasks.items()}


def definition_inputs(pipeline: tfx.dsl.Pipeline) -> dict[str, set[str]]:
    """Node id -> the input keys it declares, in the pipeline definition."""
    return {node.id: set(node.inputs) for node in pipeline.components}


def missing_from_spec(pipeline: tfx.dsl.Pipeline, spec: dict) -> list[str]:
    """What the definition has and the compiled spec does not: "node X" or "input Y of node X"."""
    tasks, missing = spec_tasks(spec), []
    for node, inputs in sorted(definition_inputs(pipeline).items()):
        if node not in tasks:
            missing.append(f"node {node}")
            continue
        missing.extend(f"input {key} of node {node}" for key in sorted(inputs - tasks[node]))
    return missing


def compile_kubeflow_v2(
    config: PipelineConfig, image: str, output_path: str, allow_reduced: bool = False
) -> tuple[str, list[str]]:
    """Write the pipeline-spec JSON for `config` running in `image`; return its path and what it lacks.

    Raises `ReducedSpecError` when the spec lacks a node or an input of the
    definition, unless `allow_reduced`.
    """
    pipeline = create_pipeline(kubeflow_config(config))
    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=os.path.dirname(os.path.abspath(output_path)),
        output_filename=os.path.basename(output_path),
    )
    runner.run(pipeline, write_out=True)
    missing = missing_from_spec(pipeline, json.loads(storage.read_text(output_path)))
    if missing and not allow_reduced:
        os.remove(output_path)
        raise ReducedSpecError(
            f"{output_path}: the compiled spec would drop {len(missing)} part(s) of the pipeline, so a gate "
            f"could pass everything there: {'; '.join(missing)}. Nothing was written "
            "(--allow-reduced-spec writes it anyway)"
        )
    return output_path, missing


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
    path, _ = compile_kubeflow_v2(config, image, output)
    print(f"pipeline spec: {path}", file=sys.stderr)
