"""Ready-to-fill Beam argument sets for running the data components beyond one machine.

The pipeline takes its Beam arguments from `PipelineConfig.beam_runner` and
`PipelineConfig.beam_args` (`fmnist run --beam-runner ... --beam-args "..."`,
or the same fields for `fmnist compile-kubeflow`). Fill the `{placeholders}`
with `beam_args(runner, project=..., ...)`.
"""

from __future__ import annotations

import string

TEMPLATES: dict[str, list[str]] = {
    # Google Cloud Dataflow: workers run the pipeline image (see Dockerfile), so the
    # module code and the pinned packages are the same as in the Trainer's container.
    "DataflowRunner": [
        "--project={project}",
        "--region={region}",
        "--temp_location=gs://{bucket}/beam/tmp",
        "--staging_location=gs://{bucket}/beam/staging",
        "--sdk_container_image={image}",
        "--experiments=use_runner_v2",
        "--machine_type=n1-standard-4",
        "--max_num_workers=8",
        "--disk_size_gb=50",
    ],
    # Apache Flink through Beam's portable job server; workers start the pipeline image.
    "FlinkRunner": [
        "--flink_master={flink_master}",
        "--environment_type=DOCKER",
        "--environment_config={image}",
        "--parallelism=8",
    ],
    # Apache Spark through Beam's Spark job server.
    "SparkRunner": [
        "--spark_master_url={spark_master}",
        "--environment_type=DOCKER",
        "--environment_config={image}",
    ],
    # Any portable runner behind a Beam job service.
    "PortableRunner": [
        "--job_endpoint={job_endpoint}",
        "--environment_type=DOCKER",
        "--environment_config={image}",
    ],
}


def placeholders(runner: str) -> list[str]:
    """The names a runner's template needs."""
    names = {name for arg in _template(runner) for _, name, _, _ in string.Formatter().parse(arg) if name}
    return sorted(names)


def beam_args(runner: str, **values: str) -> list[str]:
    """The filled argument set for `runner`; every placeholder must be given."""
    missing = [name for name in placeholders(runner) if name not in values]
    if missing:
        raise ValueError(f"{runner} needs values for {missing}")
    return [arg.format(**values) for arg in _template(runner)]


def _template(runner: str) -> list[str]:
    if runner not in TEMPLATES:
        raise ValueError(f"no argument template for runner '{runner}'; known: {sorted(TEMPLATES)}")
    return TEMPLATES[runner]
