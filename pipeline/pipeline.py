"""The pipeline definition: components and their wiring, nothing else.

`create_pipeline` reads no data and builds no model; runners decide where and
how it executes, and which span it runs on (`SpanPlan`, from
`pipeline/span_plan.py`). One run, with LocalDagRunner:

    SpanExampleGen (the run's span, split train/eval)   GoldExampleGen (the official test set)
      -> StatisticsGen, ExampleValidator  (both, against the curated schema from ImportSchemaGen)
      -> AnomalyGate                      (stops a span or gold set that breaks the schema)
      -> SpanImageStatistics, PreviousSpanImageStatistics, PreviousWindowImageStatistics
      -> DistributionValidator x2         (TFDV drift comparators: vs the previous span, vs the window)
      -> DriftGate                        (stops a drifted span, or warns)
      -> training window (the newest spans that passed the gates) -> Transform -> Trainer
         (warm-started from the served model) and TrainingWindowImageStatistics (drift reference)
      -> Evaluator (TFMA on the gold set, against the served model: floor, overall drop, per-class drop)
         and ServingCheck (the candidate answers gRPC requests)
      -> Pusher (a complete version, published as `canary` in models.config; only with both blessings)
"""

from __future__ import annotations

import tensorflow_model_analysis as tfma
from tensorflow_metadata.proto.v0 import path_pb2, schema_pb2
from tfx import v1 as tfx
from tfx.components.distribution_validator.component import DistributionValidator
from tfx.dsl.components.base import executor_spec
from tfx.proto import distribution_validator_pb2, range_config_pb2

from components import evaluation_metrics
from components.anomaly_gate import AnomalyGate
from components.drift_gate import DriftGate
from components.image_statistics import ImageFeatureStatistics
from components.label_gate import LabelGate
from components.pusher import AtomicPusherExecutor
from components.serving_check import ServingCheck
from components.trainer import TRAINING_CONFIG_KEY
from core.config import DriftConfig, EvaluationConfig, PipelineConfig, SpansConfig
from core.image_features import FEATURE_NAMES
from core.spans import GOLD_SPLIT_DIR, gold_file_pattern, span_file_pattern
from core.vocabulary import LABEL_KEY, NUM_CLASSES, SERVING_SIGNATURE
from pipeline import nodes
from pipeline.fingerprint import code_fingerprint
from pipeline.metadata import connection_config
from pipeline.resolvers import BASELINE, WARM_START, ServedModelStrategy, SpanWindowStrategy
from pipeline.span_plan import SpanPlan

PREPROCESSING_MODULE, RUN_MODULE = "components.preprocessing", "components.trainer"
PREPROCESSING_FN = f"{PREPROCESSING_MODULE}.preprocessing_fn"
RUN_FN = f"{RUN_MODULE}.run_fn"
TUNER_MODULE = "components.tuner"
TUNER_FN = f"{TUNER_MODULE}.tuner_fn"
CODE_FINGERPRINT_KEY = "code_fingerprint"
TRAIN, EVAL = "train", "eval"
ALL_SPANS = 1_000_000  # a rolling window this wide holds every span


def fingerprinted(node, module: str):
    """`node` (a function component from `module`) with its code's fingerprint in its cache key.

    The fingerprint rides in the executor spec's flags, which TFX hashes into
    the cache key and the executor ignores.
    """
    node.executor_spec.add_extra_flags([f"--{CODE_FINGERPRINT_KEY}={code_fingerprint(module)}"])
    return node


def image_statistics(examples, node_id: str, after) -> tfx.dsl.components.base.base_node.BaseNode:
    node = ImageFeatureStatistics(examples=examples, bins=DriftConfig().bins).with_id(node_id)
    node.add_upstream_node(after)
    return fingerprinted(node, ImageFeatureStatistics.__module__)


def make_eval_config(config: EvaluationConfig) -> tfma.EvalConfig:
    """The gates against the served model, on the gold test set.

    Beside the gates it measures, for the report: per class precision, recall
    and one-vs-rest accuracy (TFMA's binarized metrics), and the calibration of
    the top label (`components/evaluation_metrics.py`).

    Overall accuracy: at least the floor, and at most `max_accuracy_drop` below
    the served model. Per class (a slice per label): at most `max_class_drop`
    below the served model, so a collapse of one class cannot hide inside an
    unchanged overall figure. The floor stays on the overall slice only: a
    threshold in a MetricsSpec applies to every slice it names, and the weakest
    class (Shirt) sits far below an overall-sized floor. Change thresholds are
    skipped while there is no served model yet (the first push).
    """
    overall, per_class = tfma.SlicingSpec(), tfma.SlicingSpec(feature_keys=[LABEL_KEY])

    def no_drop_below_baseline(drop: float) -> tfma.GenericChangeThreshold:
        return tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={"value": -drop}
        )

    thresholds = [
        tfma.PerSliceMetricThreshold(
            slicing_specs=[overall],
            threshold=tfma.MetricThreshold(
                value_threshold=tfma.GenericValueThreshold(lower_bound={"value": config.accuracy_floor}),
                change_threshold=no_drop_below_baseline(config.max_accuracy_drop),
            ),
        ),
        tfma.PerSliceMetricThreshold(
            slicing_specs=[per_class],
            threshold=tfma.MetricThreshold(change_threshold=no_drop_below_baseline(config.max_class_drop)),
        ),
    ]
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(signature_name=SERVING_SIGNATURE, label_key=LABEL_KEY)],
        slicing_specs=[overall, per_class],
        metrics_specs=[
            tfma.MetricsSpec(
                metrics=[
                    tfma.MetricConfig(class_name="ExampleCount"),
                    tfma.MetricConfig(
                        class_name="SparseCategoricalAccuracy", per_slice_thresholds=thresholds
                    ),
                    tfma.MetricConfig(class_name="MultiClassConfusionMatrixPlot"),
                    tfma.MetricConfig(class_name="TopLabelCalibration", module=evaluation_metrics.__name__),
                ]
            ),
            # Per class, as a one-vs-rest binary problem: precision, recall, accuracy.
            tfma.MetricsSpec(
                metrics=evaluation_metrics.per_class_metric_configs(),
                binarize=tfma.BinarizationOptions(class_ids={"values": list(range(NUM_CLASSES))}),
            ),
        ],
    )


def make_drift_config(config: SpansConfig) -> distribution_validator_pb2.DistributionValidatorConfig:
    """TFDV drift comparators: Jensen-Shannon per binned image feature, L-infinity on the class shares."""
    features = []
    for name in FEATURE_NAMES:
        comparator = schema_pb2.FeatureComparator()
        comparator.jensen_shannon_divergence.threshold = config.drift_jsd_threshold
        features.append((name, comparator))
    classes = schema_pb2.FeatureComparator()
    classes.infinity_norm.threshold = config.label_linf_threshold
    features.append((LABEL_KEY, classes))
    return distribution_validator_pb2.DistributionValidatorConfig(
        default_slice_config=distribution_validator_pb2.DistributionValidatorConfig.DatasetConfig(
            feature=[
                distribution_validator_pb2.FeatureComparator(
                    path=path_pb2.Path(step=[name]), distribution_comparator=comparator
                )
                for name, comparator in features
            ]
        )
    )


def import_example_gen(
    config: PipelineConfig, pattern: str, splits: dict[str, int], range_config=None
) -> tfx.components.ImportExampleGen:
    """ImportExampleGen over `pattern` under the data directory, hash-split into `splits` (name: buckets).

    Only the files the pattern names are read: anything else a user leaves in
    the data directory is ignored.
    """
    return tfx.components.ImportExampleGen(
        input_base=config.data_dir,
        input_config=tfx.proto.Input(splits=[tfx.proto.Input.Split(name="input", pattern=pattern)]),
        output_config=tfx.proto.Output(
            split_config=tfx.proto.SplitConfig(
                splits=[tfx.proto.SplitConfig.Split(name=name, hash_buckets=n) for name, n in splits.items()]
            )
        ),
        range_config=range_config,
    )


def span_window(example_gen, node_id: str, num_spans: int, plan: SpanPlan | None, before: int = 0):
    """A resolver of the newest `num_spans` spans (0: all) that may train (see `SpanWindowStrategy`)."""
    return tfx.dsl.Resolver(
        strategy_class=SpanWindowStrategy,
        config={
            "range_config": range_config_pb2.RangeConfig(
                rolling_range=range_config_pb2.RollingRange(num_spans=num_spans or ALL_SPANS)
            ),
            "exclude_spans": list(plan.refused) if plan else [],
            "before_span": before,
        },
        examples=tfx.dsl.Channel(
            type=tfx.types.standard_artifacts.Examples, producer_component_id=example_gen.id
        ),
    ).with_id(node_id)


def served_model(config: PipelineConfig, plan: SpanPlan, node_id: str, role: str, after):
    resolver = tfx.dsl.Resolver(
        strategy_class=ServedModelStrategy,
        config={
            "serving_dir": config.serving_dir,
            "model_name": config.model_name,
            "pipeline_name": config.pipeline_name,
            "span": plan.span,
            "role": role,
        },
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model, producer_component_id=nodes.TRAINER),
    ).with_id(node_id)
    resolver.add_upstream_node(after)
    return resolver


def create_pipeline(
    config: PipelineConfig, plan: SpanPlan | None = None, orchestrator: str = "local"
) -> tfx.dsl.Pipeline:
    """The Fashion-MNIST pipeline for `config` running `plan`'s span; runs on any TFX orchestrator.

    With `orchestrator="local"` (LocalDagRunner) the whole loop runs: span
    windows, the drift gate against earlier spans, the served model as
    baseline and warm start, ML Metadata in SQLite under the pipeline root.
    `"kubeflow_v2"` (Kubeflow Pipelines v2, Vertex AI) compiles resolvers only
    into TFX's two built-in metadata queries (`LatestArtifactStrategy`,
    `LatestBlessedModelStrategy`), so there the run trains on the newest span
    alone, gates it on the schema, and takes the latest blessed model as the
    baseline; the platform brings its own metadata store.
    """
    if orchestrator not in ("local", "kubeflow_v2"):
        raise ValueError(f"orchestrator must be 'local' or 'kubeflow_v2', got '{orchestrator}'")
    local = orchestrator == "local"
    if local and plan is None:
        raise ValueError("a local run needs a SpanPlan (pipeline.span_plan.plan_spans)")
    span_range = (
        range_config_pb2.RangeConfig(
            static_range=range_config_pb2.StaticRange(start_span_number=plan.span, end_span_number=plan.span)
        )
        if plan
        else None
    )
    validation_percent = round(config.training.validation_fraction * 100)
    span_gen = import_example_gen(
        config, span_file_pattern(), {TRAIN: 100 - validation_percent, EVAL: validation_percent}, span_range
    ).with_id(nodes.SPAN_EXAMPLE_GEN)
    gold_gen = import_example_gen(config, gold_file_pattern(), {GOLD_SPLIT_DIR: 1}).with_id(
        nodes.GOLD_EXAMPLE_GEN
    )
    schema_gen = tfx.components.ImportSchemaGen(schema_file=config.schema_path).with_id(nodes.SCHEMA_GEN)
    statistics = tfx.components.StatisticsGen(examples=span_gen.outputs["examples"]).with_id(
        nodes.SPAN_STATISTICS
    )
    gold_statistics = tfx.components.StatisticsGen(examples=gold_gen.outputs["examples"]).with_id(
        nodes.GOLD_STATISTICS
    )
    validator = tfx.components.ExampleValidator(
        statistics=statistics.outputs["statistics"], schema=schema_gen.outputs["schema"]
    ).with_id(nodes.SPAN_VALIDATOR)
    gold_validator = tfx.components.ExampleValidator(
        statistics=gold_statistics.outputs["statistics"], schema=schema_gen.outputs["schema"]
    ).with_id(nodes.GOLD_VALIDATOR)
    anomaly_gate = fingerprinted(
        AnomalyGate(
            examples=span_gen.outputs["examples"],
            anomalies=validator.outputs["anomalies"],
            schema=schema_gen.outputs["schema"],
            gold_anomalies=gold_validator.outputs["anomalies"],
        ).with_id(nodes.ANOMALY_GATE),
        AnomalyGate.__module__,
    )
    components = [span_gen, gold_gen, schema_gen, statistics, gold_statistics, validator, gold_validator]
    components.append(anomaly_gate)

    gate_inputs = {}
    if local and plan.previous is not None:
        # Only data that passed the schema gate is summarised (bad pixels would fail its parsing).
        span_statistics = image_statistics(
            span_gen.outputs["examples"], nodes.SPAN_IMAGE_STATISTICS, anomaly_gate
        )
        previous = span_window(span_gen, nodes.PREVIOUS_SPAN, 1, plan, before=plan.span)
        previous_window = span_window(
            span_gen, nodes.PREVIOUS_WINDOW, config.spans.window_spans, plan, plan.span
        )
        drift_config = make_drift_config(config.spans)
        for baseline_id, window, validator_id, key in (
            (
                nodes.PREVIOUS_SPAN_IMAGE_STATISTICS,
                previous,
                nodes.DRIFT_VS_PREVIOUS_SPAN,
                "vs_previous_span",
            ),
            (nodes.PREVIOUS_WINDOW_IMAGE_STATISTICS, previous_window, nodes.DRIFT_VS_WINDOW, "vs_window"),
        ):
            baseline = image_statistics(window.outputs["examples"], baseline_id, anomaly_gate)
            compared = DistributionValidator(
                statistics=span_statistics.outputs["statistics"],
                baseline_statistics=baseline.outputs["statistics"],
                config=drift_config,
                include_split_pairs=[(TRAIN, TRAIN)],
            ).with_id(validator_id)
            gate_inputs[key] = compared.outputs["anomalies"]
            components += [window, baseline, compared]
        components.append(span_statistics)
    drift_gate = fingerprinted(
        DriftGate(
            examples=span_gen.outputs["examples"], on_drift=config.spans.on_drift, **gate_inputs
        ).with_id(nodes.DRIFT_GATE),
        DriftGate.__module__,
    )
    drift_gate.add_upstream_node(anomaly_gate)
    label_inputs = {}  # on Kubeflow no resolver finds the served model: the label gate passes
    if local:
        asked = served_model(config, plan, nodes.LABEL_GATE_MODEL, BASELINE, drift_gate)
        label_inputs["model"] = asked.outputs["model"]
        components.append(asked)
    label_gate = fingerprinted(
        LabelGate(
            examples=span_gen.outputs["examples"],
            min_label_agreement=config.spans.min_label_agreement,
            **label_inputs,
        ).with_id(nodes.LABEL_GATE),
        LabelGate.__module__,
    )
    label_gate.add_upstream_node(drift_gate)

    if local:
        window = span_window(span_gen, nodes.TRAINING_WINDOW, config.spans.window_spans, plan)
        window.add_upstream_node(label_gate)  # the run's own span joins once it passed the gates
        training_examples = window.outputs["examples"]
        components.append(window)
    else:
        training_examples = span_gen.outputs["examples"]
    window_statistics = image_statistics(
        training_examples, nodes.TRAINING_WINDOW_IMAGE_STATISTICS, label_gate
    )
    transform = tfx.components.Transform(
        examples=training_examples,
        schema=schema_gen.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN,
        custom_config={CODE_FINGERPRINT_KEY: code_fingerprint(PREPROCESSING_MODULE)},
    ).with_id(nodes.TRANSFORM)
    transform.add_upstream_node(label_gate)

    def model_inputs(module: str) -> dict:
        """What the Tuner and the Trainer both read: the transformed window and the training config."""
        return {
            "examples": transform.outputs["transformed_examples"],
            "transform_graph": transform.outputs["transform_graph"],
            "schema": schema_gen.outputs["schema"],
            "custom_config": {
                TRAINING_CONFIG_KEY: config.to_dict()["training"],
                CODE_FINGERPRINT_KEY: code_fingerprint(module),
            },
        }

    trainer_inputs = model_inputs(RUN_MODULE)
    if config.training.tuner_trials:
        tuner = tfx.components.Tuner(tuner_fn=TUNER_FN, **model_inputs(TUNER_MODULE)).with_id(nodes.TUNER)
        trainer_inputs["hyperparameters"] = tuner.outputs["best_hyperparameters"]
        components.append(tuner)
    if local and config.training.warm_start:
        warm_start = served_model(config, plan, nodes.WARM_START_MODEL, WARM_START, transform)
        trainer_inputs["base_model"] = warm_start.outputs["model"]
        components.append(warm_start)
    trainer = tfx.components.Trainer(run_fn=RUN_FN, **trainer_inputs).with_id(nodes.TRAINER)

    if local:
        baseline = served_model(config, plan, nodes.SERVED_MODEL, BASELINE, trainer)
    else:
        baseline = tfx.dsl.Resolver(
            strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
            model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
            model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
        ).with_id(nodes.SERVED_MODEL)
        baseline.add_upstream_node(trainer)
    evaluator = tfx.components.Evaluator(
        examples=gold_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=baseline.outputs["model"],
        example_splits=[GOLD_SPLIT_DIR],
        eval_config=make_eval_config(config.evaluation),
    ).with_id(nodes.EVALUATOR)
    serving_check = fingerprinted(
        ServingCheck(
            model=trainer.outputs["model"], examples=gold_gen.outputs["examples"], split=GOLD_SPLIT_DIR
        ).with_id(nodes.SERVING_CHECK),
        ServingCheck.__module__,
    )
    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        infra_blessing=serving_check.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=config.model_serving_dir)
        ),
        custom_executor_spec=executor_spec.ExecutorClassSpec(AtomicPusherExecutor),
        custom_config={CODE_FINGERPRINT_KEY: code_fingerprint(AtomicPusherExecutor.__module__)},
    ).with_id(nodes.PUSHER)
    components += [
        drift_gate,
        label_gate,
        window_statistics,
        transform,
        trainer,
        baseline,
        evaluator,
        serving_check,
        pusher,
    ]
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=components,
        enable_cache=config.enable_cache,
        metadata_connection_config=connection_config(config) if local else None,
        beam_pipeline_args=config.beam_pipeline_args(),
    )
