"""Beyond one machine: the Kubeflow v2 / Vertex AI compile, the pipeline image, Beam runner arguments."""

import json
import re
import tomllib
from pathlib import Path

import pytest

from core.config import PipelineConfig
from pipeline import nodes
from pipeline.beam_runners import TEMPLATES, beam_args, placeholders

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "europe-docker.pkg.dev/demo/fmnist/pipeline:test"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from cli.main import main

    output = tmp_path_factory.mktemp("kfp") / "pipeline.json"
    argv = [
        "compile-kubeflow",
        "--image", IMAGE,
        "--output", str(output),
        "--workdir", "gs://demo-bucket/fmnist",
        "--beam-runner", "DataflowRunner",
        "--beam-args", "--project=demo --region=europe-west4",
    ]  # fmt: skip
    assert main(argv) == 0
    return json.loads(output.read_text())


def test_the_spec_carries_every_step_and_input_of_the_definition_and_runs_each_in_the_image(compiled: dict):
    from pipeline.definition import create_pipeline
    from pipeline.kubeflow_runner import definition_inputs, kubeflow_config, missing_from_spec, spec_tasks

    pipeline = create_pipeline(kubeflow_config(PipelineConfig(workdir="gs://demo-bucket/fmnist")))
    assert missing_from_spec(pipeline, compiled) == []
    assert spec_tasks(compiled) == definition_inputs(pipeline)  # the same steps, the same inputs
    executors = compiled["pipelineSpec"]["deploymentSpec"]["executors"]
    images = {name: e["container"]["image"] for name, e in executors.items() if "container" in e}
    assert set(images.values()) == {IMAGE}
    assert [name for name, e in executors.items() if "container" not in e] == [
        f"{nodes.DATA_DIRECTORY}_executor"  # TFX's Importer runs in the platform, not in the image
    ]
    assert compiled["pipelineSpec"]["pipelineInfo"]["name"] == "fashion-mnist"


def test_the_spec_has_no_resolver_its_decisions_are_steps_that_read_the_pipelines_own_state(compiled: dict):
    """No metadata query picks another pipeline's model: the baseline is this pipeline's stable version."""
    executors = compiled["pipelineSpec"]["deploymentSpec"]["executors"]
    assert not [name for name, e in executors.items() if "resolver" in e]
    served = compiled["pipelineSpec"]["root"]["dag"]["tasks"][nodes.SERVED_MODEL]["inputs"]["parameters"]
    assert (
        served["serving_dir"]["runtimeValue"]["constantValue"]["stringValue"]
        == "gs://demo-bucket/fmnist/serving"
    )
    planner = compiled["pipelineSpec"]["root"]["dag"]["tasks"][nodes.SPAN_PLANNER]["inputs"]["parameters"]
    assert (
        planner["ledger"]["runtimeValue"]["constantValue"]["stringValue"]
        == "gs://demo-bucket/fmnist/pipeline/span_ledger.jsonl"
    )
    importer = executors[f"{nodes.DATA_DIRECTORY}_executor"]["importer"]
    assert importer["reimport"] is True  # a new artifact every run: the planner after it never caches


def test_a_spec_that_would_drop_an_input_is_refused_naming_it(tmp_path: Path, monkeypatch, capsys):
    """What a compiler may silently leave out (a custom resolver's input, say) stops the compile."""
    from cli.main import main
    from pipeline import kubeflow_runner

    real = kubeflow_runner.missing_from_spec

    def dropped(pipeline, spec):
        del spec["pipelineSpec"]["root"]["dag"]["tasks"][nodes.TRAINER]["inputs"]["artifacts"]["base_model"]
        return real(pipeline, spec)

    monkeypatch.setattr(kubeflow_runner, "missing_from_spec", dropped)
    output = tmp_path / "spec.json"
    argv = ["compile-kubeflow", "--image", IMAGE, "--output", str(output), "--workdir", "gs://b/fm"]
    assert main(argv) == 2
    assert "would drop 1 part(s) of the pipeline" in capsys.readouterr().err and not output.exists()
    assert main([*argv, "--allow-reduced-spec"]) == 0
    assert "REDUCED: the spec lacks input base_model of node Trainer" in capsys.readouterr().out
    assert output.exists()


def test_the_spec_carries_cloud_paths_and_the_beam_runner(compiled: dict):
    text = json.dumps(compiled)
    assert compiled["runtimeConfig"]["gcsOutputDirectory"] == "gs://demo-bucket/fmnist/pipeline"
    assert "gs://demo-bucket/fmnist/data" in text and "gs://demo-bucket/fmnist/serving/fashion_mnist" in text
    assert "--runner=DataflowRunner" in text and "--project=demo" in text
    assert "/pipeline/schema/schema.pbtxt" in text  # the schema inside the image


def _lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements" / "lock.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_the_dockerfile_installs_the_lock_and_the_project_on_the_verified_python():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim-bookworm$", dockerfile, re.M)  # the lock's cp311, glibc 2.36
    assert "COPY requirements/lock.txt requirements/lock.txt" in dockerfile
    assert "pip install --ignore-requires-python -r requirements/lock.txt" in dockerfile
    assert "TF_USE_LEGACY_KERAS=1" in dockerfile
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    for directory in [*packages, "schema"]:
        assert f"COPY {directory} {directory}" in dockerfile, directory
    assert re.search(r"^WORKDIR /pipeline$", dockerfile, re.M)  # IMAGE_SCHEMA_PATH lives under it
    beam = _lock()["apache-beam"]  # Beam's boot program, of the SDK release the lock pins, starts workers
    assert f"COPY --from=apache/beam_python3.11_sdk:{beam} /opt/apache/beam /opt/apache/beam" in dockerfile
    assert re.search(r'^ENTRYPOINT \["/opt/apache/beam/boot"\]$', dockerfile, re.M)


def test_the_lock_pins_tfx_with_its_kfp_extra():
    from importlib import metadata

    pins = _lock()
    assert pins["tfx"] == "1.16.0" and pins["kfp"].startswith("2.") and "kfp-pipeline-spec" in pins
    for name in ("tfx", "kfp", "kfp-pipeline-spec", "tensorflow", "apache-beam"):
        assert metadata.version(name) == pins[name], name  # the venv is the lock


def test_beam_arguments_for_local_and_cloud_runners():
    local = PipelineConfig(beam_workers=3).beam_pipeline_args()
    assert local == ["--direct_running_mode=multi_processing", "--direct_num_workers=3"]
    unset = PipelineConfig().beam_pipeline_args()  # 0: Beam takes the cores of the machine that runs it
    assert unset == ["--direct_running_mode=multi_processing", "--direct_num_workers=0"]
    cloud = PipelineConfig(beam_runner="FlinkRunner", beam_args="--flink_master=host:8081 --parallelism=4")
    assert cloud.beam_pipeline_args() == [
        "--runner=FlinkRunner",
        "--flink_master=host:8081",
        "--parallelism=4",
    ]


@pytest.mark.parametrize("runner", sorted(TEMPLATES))
def test_every_runner_template_fills_and_names_what_is_missing(runner: str):
    values = {name: f"<{name}>" for name in placeholders(runner)}
    filled = beam_args(runner, **values)
    assert all("{" not in arg for arg in filled)
    assert any(f"<{name}>" in " ".join(filled) for name in values)
    with pytest.raises(ValueError, match=f"{runner} needs values for"):
        beam_args(runner)


def test_the_kubernetes_manifest_serves_the_pushed_directory_with_a_valid_models_config(tmp_path: Path):
    import yaml

    from serving.model_config import read_model_config

    documents = {
        d["kind"]: d
        for d in yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / "tf-serving.yaml").read_text())
    }
    assert set(documents) == {"ConfigMap", "Deployment", "Service"}
    config = tmp_path / "models.config"
    config.write_text(documents["ConfigMap"]["data"]["models.config"])
    (source,) = read_model_config(str(config))
    assert source.name == "fashion_mnist" and source.base_path.endswith("/serving/fashion_mnist")
    container = documents["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"tensorflow/serving:{_lock()['tensorflow-serving-api']}"
    assert "--model_config_file=/config/models.config" in container["args"]
    assert {p["containerPort"] for p in container["ports"]} == {8500, 8501}
    assert container["readinessProbe"]["httpGet"]["path"] == "/v1/models/fashion_mnist"
    service = {p["port"]: p["targetPort"] for p in documents["Service"]["spec"]["ports"]}
    assert service == {
        8500: "grpc-logged",
        8501: "rest-logged",
    }  # all traffic goes through the request logger
    logger = documents["Deployment"]["spec"]["template"]["spec"]["containers"][1]
    assert logger["command"] == ["fmnist", "log-proxy"] and "--upstream=127.0.0.1:8500" in logger["args"]
    assert {p["containerPort"] for p in logger["ports"]} == {8600, 8601}
    assert "--port=8600" in logger["args"] and "--rest-api-port=8601" in logger["args"]
    from serving.protos import MonitoringConfig, read_text_proto

    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text(documents["ConfigMap"]["data"]["monitoring.config"])
    prometheus = read_text_proto(str(monitoring), MonitoringConfig, "monitoring.config").prometheus_config
    assert prometheus.enable and prometheus.path == "/monitoring/prometheus/metrics"
    assert "--monitoring_config_file=/config/monitoring.config" in container["args"]
    from cli.main import build_parser

    build_parser().parse_args(["log-proxy", *logger["args"]])  # the sidecar's flags exist


def test_tfx_cli_compiles_the_runner_file_for_vertex(tmp_path: Path):
    """`tfx pipeline compile --engine vertex` runs pipeline/kubeflow_runner.py as TFX's CLI runs DSL files."""
    import os
    import subprocess
    import sys

    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",  # the CLI looks for `kfp` with the `pip` on PATH
        "FMNIST_WORKDIR": "gs://demo-bucket/fmnist",
        "FMNIST_IMAGE": IMAGE,
    }
    command = [f"{bin_dir}/tfx", "pipeline", "compile", "--engine", "vertex",
               "--pipeline_path", str(ROOT / "pipeline" / "kubeflow_runner.py")]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    spec = json.loads((tmp_path / "fashion-mnist-pipeline.json").read_text())
    assert spec["runtimeConfig"]["gcsOutputDirectory"] == "gs://demo-bucket/fmnist/pipeline"
    assert "--direct_num_workers=0" in json.dumps(spec)  # no core count of the compiling machine
