"""The pipeline definition: components and their wiring, nothing else.

`create_pipeline` reads no data and builds no model; runners (`local_runner.py`)
decide where and how it executes. The order of work:

ImportExampleGen -> StatisticsGen -> ExampleValidator (curated schema from
ImportSchemaGen) -> AnomalyGate -> ImageFeatureStatistics (the drift report's
reference) and Transform -> Trainer -> baseline Resolver ->
Evaluator (TFMA gate) and ServingCheck (the model answers gRPC requests) ->
Pusher (atomic, to the TF Serving directory; only with both blessings).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import tensorflow_model_analysis as tfma
from tfx import v1 as tfx
from tfx.dsl.components.base import executor_spec

from components.anomaly_gate import AnomalyGate
from components.baseline import PreviousBlessedModelStrategy
from components.dataset import TFRECORD_SUFFIX
from components.features import LABEL_KEY
from components.image_statistics import ImageFeatureStatistics
from components.pusher import AtomicPusherExecutor
from components.serving_check import ServingCheck
from components.trainer import SERVING_SIGNATURE, TRAINING_CONFIG_KEY
from pipeline.config import DriftConfig, EvaluationConfig, PipelineConfig

PREPROCESSING_FN = "components.preprocessing.preprocessing_fn"
RUN_FN = "components.trainer.run_fn"
ACCURACY_METRIC = "sparse_categorical_accuracy"


def code_fingerprint() -> str:
    """SHA-256 of the module code and configuration schema.

    Transform and Trainer load their functions by import path, so TFX cannot
    see code changes; this fingerprint goes into their `custom_config`, which is
    part of the cache key, so editing the code invalidates their cached outputs.
    """
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    module_code = [
        *root.glob("components/*.py"),
        root / "pipeline" / "config.py",
        root / "serving" / "warmup.py",
        root / "serving" / "export.py",
    ]
    for path in sorted(module_code):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def make_eval_config(config: EvaluationConfig) -> tfma.EvalConfig:
    """Gate on overall accuracy only; report accuracy per class without gating it.

    A threshold in a MetricsSpec would apply to every slice, per-class slices
    included (the weakest class, Shirt, would fail an overall-sized floor), so
    the thresholds are restricted to the overall slice.
    """
    overall = tfma.SlicingSpec()
    threshold = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": config.accuracy_floor}),
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER,
            absolute={"value": -config.max_accuracy_drop},
        ),
    )
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(signature_name=SERVING_SIGNATURE, label_key=LABEL_KEY)],
        slicing_specs=[overall, tfma.SlicingSpec(feature_keys=[LABEL_KEY])],
        metrics_specs=[
            tfma.MetricsSpec(
                metrics=[
                    tfma.MetricConfig(class_name="ExampleCount"),
                    tfma.MetricConfig(
                        class_name="SparseCategoricalAccuracy",
                        per_slice_thresholds=[
                            tfma.PerSliceMetricThreshold(slicing_specs=[overall], threshold=threshold)
                        ],
                    ),
                    tfma.MetricConfig(class_name="MultiClassConfusionMatrixPlot"),
                ]
            )
        ],
    )


def create_pipeline(config: PipelineConfig, orchestrator: str = "local") -> tfx.dsl.Pipeline:
    """The Fashion-MNIST pipeline for `config`; runs on any TFX orchestrator.

    With `orchestrator="local"` (LocalDagRunner), ML Metadata is SQLite under the
    pipeline root and the baseline resolver is `PreviousBlessedModelStrategy`.
    With `"kubeflow_v2"` (Kubeflow Pipelines v2, Vertex AI) the platform brings
    its own store, and resolvers must be ones it compiles into a metadata query:
    TFX's `LatestBlessedModelStrategy` (on a cached rerun the candidate may then
    be its own baseline, which passes the change threshold with a change of 0).
    """
    if orchestrator not in ("local", "kubeflow_v2"):
        raise ValueError(f"orchestrator must be 'local' or 'kubeflow_v2', got '{orchestrator}'")
    local = orchestrator == "local"
    example_gen = tfx.components.ImportExampleGen(
        input_base=config.data_dir,
        input_config=tfx.proto.Input(
            splits=[
                # Only the files `fmnist data prepare` writes; anything else in the folder is ignored.
                tfx.proto.Input.Split(name="train", pattern=f"train/*{TFRECORD_SUFFIX}"),
                tfx.proto.Input.Split(name="eval", pattern=f"test/*{TFRECORD_SUFFIX}"),
            ]
        ),
    )
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema_gen = tfx.components.ImportSchemaGen(schema_file=config.schema_path)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    anomaly_gate = AnomalyGate(
        anomalies=example_validator.outputs["anomalies"], schema=schema_gen.outputs["schema"]
    )

    # Only data that passed the gate is summarised (bad pixels would fail its parsing, not the gate).
    image_statistics = ImageFeatureStatistics(
        examples=example_gen.outputs["examples"], bins=DriftConfig().bins
    )
    image_statistics.add_upstream_node(anomaly_gate)

    fingerprint = code_fingerprint()
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN,
        custom_config={"code_fingerprint": fingerprint},
    )
    transform.add_upstream_node(anomaly_gate)

    trainer = tfx.components.Trainer(
        run_fn=RUN_FN,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        custom_config={TRAINING_CONFIG_KEY: config.to_dict()["training"], "code_fingerprint": fingerprint},
    )

    baseline = tfx.dsl.Resolver(
        strategy_class=(
            PreviousBlessedModelStrategy if local else tfx.dsl.experimental.LatestBlessedModelStrategy
        ),
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("previous_blessed_model")
    # The strategy treats the newest Model as this run's candidate, so it must run after Trainer.
    baseline.add_upstream_node(trainer)

    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=baseline.outputs["model"],
        example_splits=["eval"],
        eval_config=make_eval_config(config.evaluation),
    )
    serving_check = ServingCheck(model=trainer.outputs["model"], examples=example_gen.outputs["examples"])
    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        infra_blessing=serving_check.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=config.model_serving_dir)
        ),
        custom_executor_spec=executor_spec.ExecutorClassSpec(AtomicPusherExecutor),
    )
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=[
            example_gen,
            statistics_gen,
            image_statistics,
            schema_gen,
            example_validator,
            anomaly_gate,
            transform,
            trainer,
            baseline,
            evaluator,
            serving_check,
            pusher,
        ],
        enable_cache=config.enable_cache,
        metadata_connection_config=(
            tfx.orchestration.metadata.sqlite_metadata_connection_config(config.metadata_path)
            if local
            else None
        ),
        beam_pipeline_args=config.beam_pipeline_args(),
    )
