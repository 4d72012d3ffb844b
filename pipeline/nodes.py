"""The pipeline's node ids: the wiring names nodes with these, and ML Metadata readers find them by them."""

SPAN_EXAMPLE_GEN = "SpanExampleGen"  # one span per run
GOLD_EXAMPLE_GEN = "GoldExampleGen"  # the official test set, fixed
SCHEMA_GEN = "ImportSchemaGen"
SPAN_STATISTICS = "StatisticsGen"
GOLD_STATISTICS = "GoldStatisticsGen"
SPAN_VALIDATOR = "ExampleValidator"
GOLD_VALIDATOR = "GoldExampleValidator"
ANOMALY_GATE = "AnomalyGate"
SPAN_IMAGE_STATISTICS = "SpanImageStatistics"
PREVIOUS_SPAN = "previous_span"
PREVIOUS_SPAN_IMAGE_STATISTICS = "PreviousSpanImageStatistics"
PREVIOUS_WINDOW = "previous_window"
PREVIOUS_WINDOW_IMAGE_STATISTICS = "PreviousWindowImageStatistics"
DRIFT_VS_PREVIOUS_SPAN = "DriftVsPreviousSpan"
DRIFT_VS_WINDOW = "DriftVsWindow"
DRIFT_GATE = "DriftGate"
LABEL_GATE_MODEL = "label_gate_model"  # the served model the label gate asks
LABEL_GATE = "LabelGate"
TRAINING_WINDOW = "training_window"
TRAINING_WINDOW_IMAGE_STATISTICS = "TrainingWindowImageStatistics"
TRANSFORM = "Transform"
WARM_START_MODEL = "warm_start_model"
TUNER = "Tuner"
TRAINER = "Trainer"
SERVED_MODEL = "served_model"
EVALUATOR = "Evaluator"
SERVING_CHECK = "ServingCheck"
PUSHER = "Pusher"

# Resolver nodes: they run on every run (they are how a run picks its inputs), so they are never "cached".
RESOLVERS = frozenset(
    {PREVIOUS_SPAN, PREVIOUS_WINDOW, TRAINING_WINDOW, WARM_START_MODEL, SERVED_MODEL, LABEL_GATE_MODEL}
)
