"""The pipeline definition: components, their wiring and their cache keys; one DAG for every orchestrator.

`create_pipeline(config)` reads no data, builds no model and decides nothing
about a run: it is compiled once from the configuration and the same compiled
pipeline runs every day, under LocalDagRunner here and, compiled with TFX's
KubeflowV2DagRunner, on Kubeflow Pipelines or Vertex AI. The files it reads
are the project's own modules, whose fingerprint goes into the cache key of
each component that runs them (`fingerprinted`). The configuration shapes the
DAG (the Tuner only with `tuner_trials`, the Trainer's `base_model` input only
with `warm_start`); the runner adds the ML Metadata connection, and the
Kubeflow runner renames the pipeline (`pipeline/kubeflow_runner.py`). Every per-run
decision is made while the DAG runs, by steps that read the pipeline's own
state through TensorFlow's filesystem (the data directory, the span ledger,
the serving directory's rollout), because Vertex AI runs no custom resolver
and TFX 1.16's Kubeflow V2 compiler turns only `LatestArtifactStrategy` and
`LatestBlessedModelStrategy` into metadata queries
(`tfx/orchestration/kubeflow/v2/step_builder.py`). Three stages:

1. data gates: the data directory (TFX `Importer`, every run) -> SpanPlanner
   (the span to run, staged) -> SpanExampleGen and GoldExampleGen ->
   StatisticsGen, ExampleValidator against the curated schema -> AnomalyGate;
   SpanImageStatistics and DriftBaselines (the previous span, the window
   before) -> DistributionValidator x2 -> DriftGate; ServedModel (what the
   `stable` label serves) -> LabelGate (the span's labels against the served
   model's own agreement with the gold set's);
2. training: TrainingWindow (the span joins; the newest usable spans) ->
   TrainingWindowImageStatistics (the drift reference), Transform, [Tuner],
   Trainer (warm-started from the served model);
3. gate and release: Evaluator (TFMA on the gold set, against the served
   model: the floor; the overall and per-class drops paired, with their
   intervals, `components/evaluator.py`) and ServingCheck (the
   candidate answers gRPC requests) -> Pusher (a complete version, published
   as `canary`) -> ModelVerdict (the outcome, into the span ledger).
"""

from __future__ import annotations

import dataclasses

from tfx import v1 as tfx
from tfx.components.distribution_validator.component import DistributionValidator
from tfx.dsl.components.base.base_node import BaseNode

from components.anomaly_gate import AnomalyGate
from components.artifacts import DataDirectory
from components.drift_baselines import DriftBaselines
from components.drift_gate import DriftGate, make_drift_config
from components.evaluator import ServedModelEvaluator
from components.image_statistics import ImageFeatureStatistics
from components.label_gate import LabelGate
from components.model_verdict import ModelVerdict
from components.pusher import AtomicPusher
from components.served_model import ServedModel
from components.serving_check import ServingCheck
from components.span_planner import SpanPlanner
from components.trainer import TRAINING_CONFIG_KEY
from components.training_window import TrainingWindow
from core.config import DriftConfig, PipelineConfig
from core.spans import GOLD_SPLIT_DIR, gold_file_pattern, span_file_pattern
from pipeline import nodes
from pipeline.evaluation import make_eval_config
from pipeline.fingerprint import code_fingerprint

PREPROCESSING_MODULE, RUN_MODULE = "components.preprocessing", "components.trainer"
PREPROCESSING_FN = f"{PREPROCESSING_MODULE}.preprocessing_fn"
RUN_FN = f"{RUN_MODULE}.run_fn"
TUNER_MODULE = "components.tuner"
TUNER_FN = f"{TUNER_MODULE}.tuner_fn"
CODE_FINGERPRINT_KEY = "code_fingerprint"
TRAIN, EVAL = "train", "eval"


def fingerprinted(node: BaseNode, module: str | None = None) -> BaseNode:
    """`node` (a component of this project) with its code's fingerprint in its cache key.

    The fingerprint rides in the executor spec's flags, which TFX hashes into
    the cache key and the executor ignores.
    """
    module = module or type(node).__module__
    node.executor_spec.add_extra_flags([f"--{CODE_FINGERPRINT_KEY}={code_fingerprint(module)}"])
    return node


def after(node: BaseNode, *upstream: BaseNode) -> BaseNode:
    """`node`, run only once every `upstream` node succeeded (a gate has no output to wire)."""
    for other in upstream:
        node.add_upstream_node(other)
    return node


def import_example_gen(
    input_base: str, pattern: str, splits: dict[str, int], node_id: str
) -> tfx.components.ImportExampleGen:
    """ImportExampleGen over `pattern` under `input_base`, hash-split into `splits` (name: buckets).

    Only the files the pattern names are read: anything else beside them is ignored.
    """
    return tfx.components.ImportExampleGen(
        input_base=input_base,
        input_config=tfx.proto.Input(splits=[tfx.proto.Input.Split(name="input", pattern=pattern)]),
        output_config=tfx.proto.Output(
            split_config=tfx.proto.SplitConfig(
                splits=[tfx.proto.SplitConfig.Split(name=name, hash_buckets=n) for name, n in splits.items()]
            )
        ),
    ).with_id(node_id)


def image_statistics(examples, node_id: str) -> BaseNode:
    return fingerprinted(
        ImageFeatureStatistics(examples=examples, bins=DriftConfig().bins).with_id(node_id),
        ImageFeatureStatistics.__module__,
    )


@dataclasses.dataclass
class DataStage:
    """What the data gates hand on: the run's checked span, the gold set, the schema, the served model."""

    nodes: list[BaseNode]
    span_examples: tfx.dsl.Channel
    gold_examples: tfx.dsl.Channel
    schema: tfx.dsl.Channel
    served_model: tfx.dsl.Channel
    last_gate: BaseNode


@dataclasses.dataclass
class TrainingStage:
    nodes: list[BaseNode]
    model: tfx.dsl.Channel


def data_gates(config: PipelineConfig) -> DataStage:
    """Pick and ingest the run's span, then the schema, drift and label gates (each may stop the run)."""
    data = tfx.dsl.Importer(source_uri=config.data_dir, artifact_type=DataDirectory, reimport=True).with_id(
        nodes.DATA_DIRECTORY
    )  # re-imported every run: the planner after it must run every run
    planner = fingerprinted(
        SpanPlanner(data=data.outputs["result"], intake=config.intake_dir, ledger=config.span_ledger).with_id(
            nodes.SPAN_PLANNER
        )
    )
    validation_percent = round(config.training.validation_fraction * 100)
    span_gen = after(
        import_example_gen(
            config.intake_dir,
            span_file_pattern(),
            {TRAIN: 100 - validation_percent, EVAL: validation_percent},
            nodes.SPAN_EXAMPLE_GEN,
        ),
        planner,
    )
    gold_gen = import_example_gen(
        config.data_dir, gold_file_pattern(), {GOLD_SPLIT_DIR: 1}, nodes.GOLD_EXAMPLE_GEN
    )
    schema_gen = tfx.components.ImportSchemaGen(schema_file=config.schema_path).with_id(nodes.SCHEMA_GEN)
    span, gold, schema = (
        span_gen.outputs["examples"],
        gold_gen.outputs["examples"],
        schema_gen.outputs["schema"],
    )
    stage: list[BaseNode] = [data, planner, span_gen, gold_gen, schema_gen]
    validators = {}
    for examples, statistics_id, validator_id in (
        (span, nodes.SPAN_STATISTICS, nodes.SPAN_VALIDATOR),
        (gold, nodes.GOLD_STATISTICS, nodes.GOLD_VALIDATOR),
    ):
        statistics = tfx.components.StatisticsGen(examples=examples).with_id(statistics_id)
        validators[validator_id] = tfx.components.ExampleValidator(
            statistics=statistics.outputs["statistics"], schema=schema
        ).with_id(validator_id)
        stage += [statistics, validators[validator_id]]
    anomaly_gate = fingerprinted(
        AnomalyGate(
            examples=span,
            anomalies=validators[nodes.SPAN_VALIDATOR].outputs["anomalies"],
            schema=schema,
            gold_anomalies=validators[nodes.GOLD_VALIDATOR].outputs["anomalies"],
            ledger=config.span_ledger,
        ).with_id(nodes.ANOMALY_GATE)
    )
    drift = drift_gate(config, span, anomaly_gate)
    served = after(
        fingerprinted(
            ServedModel(examples=span, serving_dir=config.serving_dir, model_name=config.model_name).with_id(
                nodes.SERVED_MODEL
            )
        ),
        drift[-1],
    )
    label_gate = after(
        fingerprinted(
            LabelGate(
                examples=span,
                gold_examples=gold,
                model=served.outputs["model"],
                min_relative_label_agreement=config.spans.min_relative_label_agreement,
                ledger=config.span_ledger,
            ).with_id(nodes.LABEL_GATE)
        ),
        drift[-1],
    )
    return DataStage(
        nodes=[*stage, anomaly_gate, *drift, served, label_gate],
        span_examples=span,
        gold_examples=gold,
        schema=schema,
        served_model=served.outputs["model"],
        last_gate=label_gate,
    )


def drift_gate(config: PipelineConfig, span, anomaly_gate: BaseNode) -> list[BaseNode]:
    """The run's span against the previous span and the window before it; the DriftGate last.

    Only data that passed the schema gate is summarised (bad pixels would fail its parsing).
    """
    span_statistics = after(image_statistics(span, nodes.SPAN_IMAGE_STATISTICS), anomaly_gate)
    baselines = after(
        fingerprinted(
            DriftBaselines(
                examples=span,
                ledger=config.span_ledger,
                window_spans=config.spans.window_spans,
                window_images=config.spans.window_images,
                bins=DriftConfig().bins,
            ).with_id(nodes.DRIFT_BASELINES)
        ),
        anomaly_gate,
    )
    comparisons = {
        key: DistributionValidator(
            statistics=span_statistics.outputs["statistics"],
            baseline_statistics=baselines.outputs[baseline],
            config=make_drift_config(config.spans),
            include_split_pairs=[(TRAIN, TRAIN)],
        ).with_id(node_id)
        for key, baseline, node_id in (
            ("vs_previous_span", "previous_span_statistics", nodes.DRIFT_VS_PREVIOUS_SPAN),
            ("vs_window", "previous_window_statistics", nodes.DRIFT_VS_WINDOW),
        )
    }
    gate = after(
        fingerprinted(
            DriftGate(
                examples=span,
                on_drift=config.spans.on_drift,
                ledger=config.span_ledger,
                **{key: validator.outputs["anomalies"] for key, validator in comparisons.items()},
            ).with_id(nodes.DRIFT_GATE)
        ),
        anomaly_gate,
    )
    return [span_statistics, baselines, *comparisons.values(), gate]


def training(config: PipelineConfig, data: DataStage) -> TrainingStage:
    """The span joins the training window; Transform and the Trainer (warm-started from what serves)."""
    window = after(
        fingerprinted(
            TrainingWindow(
                examples=data.span_examples,
                ledger=config.span_ledger,
                window_spans=config.spans.window_spans,
                window_images=config.spans.window_images,
            ).with_id(nodes.TRAINING_WINDOW)
        ),
        data.last_gate,
    )
    examples = window.outputs["window_examples"]
    window_statistics = image_statistics(examples, nodes.TRAINING_WINDOW_IMAGE_STATISTICS)
    transform = tfx.components.Transform(
        examples=examples,
        schema=data.schema,
        preprocessing_fn=PREPROCESSING_FN,
        custom_config={CODE_FINGERPRINT_KEY: code_fingerprint(PREPROCESSING_MODULE)},
    ).with_id(nodes.TRANSFORM)

    def model_inputs(module: str) -> dict:
        """What the Tuner and the Trainer both read: the transformed window and the training config."""
        return {
            "examples": transform.outputs["transformed_examples"],
            "transform_graph": transform.outputs["transform_graph"],
            "schema": data.schema,
            "custom_config": {
                TRAINING_CONFIG_KEY: config.to_dict()["training"],
                CODE_FINGERPRINT_KEY: code_fingerprint(module),
            },
        }

    stage = [window, window_statistics, transform]
    trainer_inputs = model_inputs(RUN_MODULE)
    if config.training.tuner_trials:
        tuner = tfx.components.Tuner(tuner_fn=TUNER_FN, **model_inputs(TUNER_MODULE)).with_id(nodes.TUNER)
        trainer_inputs["hyperparameters"] = tuner.outputs["best_hyperparameters"]
        stage.append(tuner)
    if config.training.warm_start:
        trainer_inputs["base_model"] = data.served_model
    trainer = tfx.components.Trainer(run_fn=RUN_FN, **trainer_inputs).with_id(nodes.TRAINER)
    return TrainingStage(nodes=[*stage, trainer], model=trainer.outputs["model"])


def gate_and_release(config: PipelineConfig, data: DataStage, trained: TrainingStage) -> list[BaseNode]:
    """TFMA against the served model and the serving check; the Pusher; the verdict into the ledger."""
    evaluator = ServedModelEvaluator(
        examples=data.gold_examples,
        model=trained.model,
        baseline_model=data.served_model,
        example_splits=[GOLD_SPLIT_DIR],
        eval_config=make_eval_config(config.evaluation),
    ).with_id(nodes.EVALUATOR)
    fingerprinted(evaluator)
    serving_check = fingerprinted(
        ServingCheck(model=trained.model, examples=data.gold_examples, split=GOLD_SPLIT_DIR).with_id(
            nodes.SERVING_CHECK
        )
    )
    pusher = fingerprinted(
        AtomicPusher(
            model=trained.model,
            model_blessing=evaluator.outputs["blessing"],
            infra_blessing=serving_check.outputs["blessing"],
            push_destination=tfx.proto.PushDestination(
                filesystem=tfx.proto.PushDestination.Filesystem(base_directory=config.model_serving_dir)
            ),
        ).with_id(nodes.PUSHER)
    )
    verdict = fingerprinted(
        ModelVerdict(
            examples=data.span_examples,
            blessing=evaluator.outputs["blessing"],
            pushed_model=pusher.outputs["pushed_model"],
            ledger=config.span_ledger,
        ).with_id(nodes.MODEL_VERDICT)
    )
    return [evaluator, serving_check, pusher, verdict]


def create_pipeline(config: PipelineConfig, metadata_connection_config=None) -> tfx.dsl.Pipeline:
    """The Fashion-MNIST pipeline for `config`: one DAG, whatever the orchestrator and whatever the run.

    The runner passes its ML Metadata connection (LocalDagRunner: SQLite under
    the pipeline root or MySQL, `pipeline/metadata.py`); Kubeflow Pipelines and
    Vertex AI bring their own.
    """
    data = data_gates(config)
    trained = training(config, data)
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=[*data.nodes, *trained.nodes, *gate_and_release(config, data, trained)],
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=config.beam_pipeline_args(),
    )
