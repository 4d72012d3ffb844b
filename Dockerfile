# The pipeline image: every TFX component of the pipeline runs in it on Kubeflow
# Pipelines v2 / Vertex AI (pipeline/kubeflow_runner.py), and Beam workers on Dataflow,
# Flink or Spark start it too (pipeline/beam_runners.py). Not built on the development
# machine (no Docker engine); tests/pipeline/test_kubeflow.py checks it against the lock.
#
#   docker build -t europe-docker.pkg.dev/PROJECT/fmnist/pipeline:$(git rev-parse --short HEAD) .
#   docker push europe-docker.pkg.dev/PROJECT/fmnist/pipeline:$(git rev-parse --short HEAD)
#
# Python 3.11 on Debian 12 (glibc 2.36): the platform the lock was verified on.
FROM python:3.11-slim-bookworm

ENV TF_USE_LEGACY_KERAS=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /pipeline

# The same pins as the development venv. TFX 1.16 declares Python < 3.11 but runs on it.
COPY requirements/lock.txt requirements/lock.txt
RUN pip install --ignore-requires-python -r requirements/lock.txt

# The project: the shared core, the module code the components import by name
# (components.preprocessing, components.trainer, ...), the pipeline definition, the serving
# code the ServingCheck starts, the release side (exports, warmup, rollout labels) the
# Trainer and Pusher write with, the command line, and the curated schema
# (IMAGE_SCHEMA_PATH in pipeline/kubeflow_runner.py).
COPY pyproject.toml README.md ./
COPY cli cli
COPY components components
COPY core core
COPY ingest ingest
COPY monitoring monitoring
COPY pipeline pipeline
COPY release release
COPY serving serving
COPY schema schema
RUN pip install --no-deps --no-build-isolation .

# Dataflow, Flink and Spark start Beam SDK workers from this image (--sdk_container_image,
# --environment_config) through Beam's boot program, as for any custom container: it is
# taken from Beam's own image of the pinned release (apache-beam in the lock). KFP v2 sets
# its own command (TFX's executor entry point), so this entry point does not affect it.
COPY --from=apache/beam_python3.11_sdk:2.59.0 /opt/apache/beam /opt/apache/beam
ENTRYPOINT ["/opt/apache/beam/boot"]
