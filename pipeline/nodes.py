"""The pipeline's node ids: the wiring names nodes with these, and ML Metadata readers find them by them."""

DATA_DIRECTORY = "DataDirectory"  # TFX Importer of the data directory, every run
SPAN_PLANNER = "SpanPlanner"  # which span this run takes; stages it for SpanExampleGen
SPAN_EXAMPLE_GEN = "SpanExampleGen"  # one span per run
GOLD_EXAMPLE_GEN = "GoldExampleGen"  # the official test set, fixed
SCHEMA_GEN = "ImportSchemaGen"
SPAN_STATISTICS = "StatisticsGen"
GOLD_STATISTICS = "GoldStatisticsGen"
SPAN_VALIDATOR = "ExampleValidator"
GOLD_VALIDATOR = "GoldExampleValidator"
ANOMALY_GATE = "AnomalyGate"
SPAN_IMAGE_STATISTICS = "SpanImageStatistics"
DRIFT_BASELINES = "DriftBaselines"  # the previous span's and the previous window's image statistics
DRIFT_VS_PREVIOUS_SPAN = "DriftVsPreviousSpan"
DRIFT_VS_WINDOW = "DriftVsWindow"
DRIFT_GATE = "DriftGate"
SERVED_MODEL = "ServedModel"  # the model the `stable` label serves: label gate, warm start, baseline
LABEL_GATE = "LabelGate"
TRAINING_WINDOW = "TrainingWindow"
TRAINING_WINDOW_IMAGE_STATISTICS = "TrainingWindowImageStatistics"
TRANSFORM = "Transform"
TUNER = "Tuner"
TRAINER = "Trainer"
EVALUATOR = "Evaluator"
SERVING_CHECK = "ServingCheck"
PUSHER = "Pusher"
MODEL_VERDICT = "ModelVerdict"  # the run's outcome, into the span ledger

# Nodes that run on every run (they look at the data directory afresh), so they are never "cached".
ALWAYS_RUN = frozenset({DATA_DIRECTORY, SPAN_PLANNER})
