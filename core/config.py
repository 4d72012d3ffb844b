"""The one typed configuration of the project, with defaults that run on a laptop.

Every knob is a field here, and every field carries its own help line (and,
where it has them, its allowed values and range) in its metadata: the command
line turns each field into a flag from that metadata, so a knob is described in
one place. A configuration is checked when it is built, before any work starts:
a value out of range raises `ConfigError` naming the flag.

Paths are strings so that any filesystem TensorFlow supports (local, `gs://`)
works; local paths are made absolute when the configuration is built, so what
the pipeline records in ML Metadata does not depend on the directory a command
ran from.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import typing
from dataclasses import dataclass, field
from typing import Any

from core.errors import ConfigError
from core.vocabulary import INTAKE_DIR_NAME, MODEL_NAME, SPAN_LEDGER_NAME

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_SCHEMA = os.path.join(REPO_ROOT, "schema", "schema.pbtxt")
PRECISIONS = ("auto", "bfloat16", "float32")
ON_DRIFT_STOP, ON_DRIFT_WARN = "stop", "warn"
BEAM_RUNNERS = ("DirectRunner", "DataflowRunner", "FlinkRunner", "SparkRunner", "PortableRunner")


def setting(
    default: Any,
    help: str,
    *,
    choices: tuple | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    default_text: str | None = None,
    tf_serving_flag: str | None = None,
) -> Any:
    """A configuration field with its help line, allowed values or range, and how its default reads.

    `tf_serving_flag` names the `tensorflow_model_server` flag it mirrors, which
    the command line accepts as well (`--rest_api_port` beside `--rest-api-port`).
    """
    metadata = {"help": help, "choices": choices, "minimum": minimum, "maximum": maximum, "above": above}
    metadata.update(default_text=default_text, tf_serving_flag=tf_serving_flag)
    if isinstance(default, tuple):
        return field(default_factory=lambda: default, metadata=metadata)
    return field(default=default, metadata=metadata)


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def is_uri(path: str) -> bool:
    """`gs://bucket/x` and other TensorFlow filesystem URIs (as opposed to local paths)."""
    return "://" in path


def absolute(path: str) -> str:
    """Local paths made absolute; URIs unchanged."""
    return path if not path or is_uri(path) else os.path.abspath(path)


def _check_field(config: Any, f: dataclasses.Field, hint: Any) -> None:
    value = getattr(config, f.name)
    where = flag_name(f.name)
    if dataclasses.is_dataclass(hint):
        return
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, tuple) or not value or not all(isinstance(v, int) for v in value):
            raise ConfigError(f"{where}: expected one or more whole numbers, got {value!r}")
        if any(v < 1 for v in value):
            raise ConfigError(f"{where}: every value must be >= 1, got {list(value)}")
        return
    expected = float if hint is float else hint
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
        object.__setattr__(config, f.name, value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {expected.__name__}, got {value!r}")
    meta = f.metadata
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(f"{where}: must be one of {', '.join(meta['choices'])}; got {value!r}")
    if meta.get("minimum") is not None and value < meta["minimum"]:
        raise ConfigError(f"{where}: must be >= {meta['minimum']}, got {value}")
    if meta.get("maximum") is not None and value > meta["maximum"]:
        raise ConfigError(f"{where}: must be <= {meta['maximum']}, got {value}")
    if meta.get("above") is not None and value <= meta["above"]:
        raise ConfigError(f"{where}: must be > {meta['above']}, got {value}")


def validate(config: Any) -> None:
    """Check every field of a configuration dataclass against its type and metadata."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        _check_field(config, f, hints[f.name])


@dataclass(frozen=True)
class TrainingConfig:
    """How the Trainer fits the CNN (handed to `run_fn` through `custom_config`)."""

    epochs: int = setting(12, "training epochs (early stopping may end sooner)", minimum=1)
    batch_size: int = setting(256, "examples per training step", minimum=1)
    learning_rate: float = setting(3e-3, "Adam's initial learning rate (cosine decay to 0)", above=0.0)
    validation_fraction: float = setting(
        0.1,
        "share of each span ImportExampleGen splits off as its eval split, for early stopping "
        "(never the gold test set)",
        minimum=0.01,
        maximum=0.5,
    )
    early_stopping_patience: int = setting(3, "epochs without a better validation accuracy", minimum=1)
    random_flip: bool = setting(True, "augment with random horizontal flips (never vertical)")
    random_shift: float = setting(
        0.0, "augment with random shifts up to this fraction of the image (0: off)", minimum=0.0, maximum=0.5
    )
    conv_filters: tuple[int, ...] = setting((32, 64), "filters of each convolution block")
    dense_units: int = setting(256, "units of the dense layer", minimum=1)
    dropout: float = setting(0.4, "dropout before the output layer (half of it after each block)",
                             minimum=0.0, maximum=0.9)  # fmt: skip
    batch_norm_momentum: float = setting(
        0.0,
        "momentum of batch normalisation's moving statistics; 0: auto, 0.99 for a training run of 1,000 "
        "steps or more, 0.9 for a shorter one (a small window, a warm start), whose statistics would "
        "otherwise lag the weights",
        minimum=0.0,
        maximum=0.999,
    )
    label_smoothing: float = setting(
        0.0, "share of each label spread over the other classes in the loss", minimum=0.0, maximum=0.5
    )
    random_erasing: float = setting(
        0.0, "augment: chance that a random rectangle of a training image is blanked out", minimum=0.0,
        maximum=1.0,
    )  # fmt: skip
    xla: bool = setting(False, "compile the training step with XLA")
    flip_averaging: bool = setting(
        True,
        "predict as the mean over each image and its mirror image (inside the served model, so every "
        "client gets it; training sees single images)",
    )
    tuner_trials: int = setting(
        0,
        "before training, search learning rate, dense width and dropout with TFX's Tuner "
        "(KerasTuner random search) over this many trials; 0: off",
        minimum=0,
    )
    tuner_epochs: int = setting(2, "training epochs of each Tuner trial", minimum=1)
    max_steps_per_epoch: int = setting(
        0, "cap on steps per epoch; 0: a full pass (tests use a few)", minimum=0
    )
    precision: str = setting(
        "auto",
        "compute precision in training: bfloat16 (float32 weights; 1.5x faster with AVX512-BF16/AMX), "
        "float32, or auto (bfloat16 where the CPU has it)",
        choices=PRECISIONS,
    )
    seed: int = setting(42, "random seed of initialisation, shuffling and augmentation")
    warm_start: bool = setting(
        True, "start from the weights of the model serving now (when its architecture matches)"
    )
    warm_start_epochs: int = setting(4, "training epochs when warm-starting", minimum=1)
    warm_start_learning_rate: float = setting(
        1e-3, "initial learning rate when warm-starting (cosine decay to 0)", above=0.0
    )

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True)
class SpansConfig:
    """Which spans train the model, and the gate every new span passes first."""

    window_spans: int = setting(
        0, "train on at most the newest N spans that passed the data gates; 0: no bound in spans", minimum=0
    )
    window_images: int = setting(
        60_000,
        "train on at most this many images: the newest whole spans that passed the data gates and fit "
        "(the newest one always); 0: no bound. The default holds the whole official training split; "
        "accuracy against window size: README",
        minimum=0,
    )
    on_drift: str = setting(
        ON_DRIFT_STOP,
        "when a new span drifted from the previous span or the window: stop the run, or warn",
        choices=(ON_DRIFT_STOP, ON_DRIFT_WARN),
    )
    drift_jsd_threshold: float = setting(
        0.05, "largest Jensen-Shannon divergence of an image feature between spans", above=0.0, maximum=1.0
    )
    min_relative_label_agreement: float = setting(
        0.7,
        "share of the served model's agreement beyond chance on the gold set that a new span's labels "
        "must keep; clearly below it (95 % confidence) the labels look wrong (shuffled, shifted) and "
        "the run stops",
        minimum=0.0,
        maximum=1.0,
    )
    label_linf_threshold: float = setting(
        0.05, "largest change of any class's share between spans (L-infinity)", above=0.0, maximum=1.0
    )

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True)
class RetentionConfig:
    """What a run keeps of earlier outputs (after each run, and `fmnist retention`); the rest is deleted.

    Whatever the stable, canary and way-back versions and the current window
    need is always kept, with its lineage; ML Metadata and the span ledger are
    never pruned (the audit trail).
    """

    apply_retention: bool = setting(True, "after each run, delete the outputs no rule below keeps")
    keep_runs: int = setting(3, "keep every output the newest N runs made or used", minimum=1)
    keep_days: float = setting(7.0, "keep every output made within this many days", minimum=0.0)
    keep_versions: int = setting(
        5,
        "keep the newest N pushed versions (and the last N earlier stables) in the serving directory, with "
        "their lineage, besides stable, canary and the way back",
        minimum=0,
    )
    keep_drift_references: int = setting(
        10,
        "keep this many cached drift references (the newest; `fmnist drift` rebuilds the others)",
        minimum=0,
    )

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True)
class EvaluationConfig:
    """The Evaluator's gates: only a model that passes them is blessed and pushed.

    The floor is TFMA's point estimate; the drops are judged on the paired
    change against the served model and its 90 % interval
    (`components/gold_comparison.py`).
    """

    accuracy_floor: float = setting(
        0.90,
        "lowest overall gold accuracy (point estimate) a model may have to be pushed",
        minimum=0.0,
        maximum=1.0,
    )
    max_accuracy_drop: float = setting(
        0.005,
        "largest drop of overall accuracy allowed below the model serving now, on the same gold images; "
        "refused only when the drop is larger with 95 % confidence",
        maximum=1.0,
    )
    max_class_drop: float = setting(
        0.05,
        "largest drop of any one class's accuracy allowed below the model serving now, on the same gold "
        "images; refused only when the drop is larger with 95 % confidence",
        maximum=1.0,
    )

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True)
class DriftConfig:
    """How `fmnist drift` measures and judges drift (TFDV distances on binned image features).

    Distances between two empirical samples shrink with their sizes, so
    thresholds do too: Jensen-Shannon divergence `jsd_base + jsd_per_image / n`,
    L-infinity `linf_base + linf_per_sqrt_image / sqrt(n)`, where n =
    1 / (1/batch + 1/reference) (about the batch size against a large
    reference; smaller between two small samples, such as canary and stable
    traffic).
    The defaults flag no clean sample of 200 images or more and every shift of
    benchmarks/drift_benchmark.py (figures in the README).
    """

    bins: int = setting(20, "fixed-width bins on [0, 1] for each image feature and the confidence",
                        minimum=2, maximum=1000)  # fmt: skip
    jsd_base: float = setting(0.02, "Jensen-Shannon threshold: the constant term", minimum=0.0)
    jsd_per_image: float = setting(6.0, "Jensen-Shannon threshold: the term divided by the batch size",
                                   minimum=0.0)  # fmt: skip
    linf_base: float = setting(0.03, "predicted-class L-infinity threshold: the constant term", minimum=0.0)
    linf_per_sqrt_image: float = setting(
        1.0, "predicted-class L-infinity threshold: the term divided by sqrt(batch size)", minimum=0.0
    )
    min_images: int = setting(50, "smallest batch that can be judged", minimum=1)

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True)
class CanaryConfig:
    """How `fmnist canary` judges the canary against stable on the traffic both answered.

    A canary is rolled back only on clear evidence (as the Evaluator's change
    gates: a drop beyond its allowance with 95 % confidence), held while either
    version has too little logged traffic, and promoted otherwise.
    """

    canary_min_requests: int = setting(
        400,
        "logged requests each version needs before a verdict other than hold; two samples of 400 are "
        "compared for drift as surely as 200 images against the training data (the size the drift "
        "thresholds were set at), and each estimated accuracy is within about +/-3 points (90 %)",
        minimum=1,
    )
    canary_max_accuracy_drop: float = setting(
        0.02,
        "roll back when the canary's estimated accuracy is below stable's by more than this with 95 % "
        "confidence (the upper end of the difference's 90 % interval below -this)",
        minimum=0.0,
        maximum=1.0,
    )
    canary_min_agreement: float = setting(
        0.7,
        "roll back when the canary gives stable's answer on fewer than this share of the same logged "
        "inputs (a retrained version of this model agrees on about 0.9: below 0.7 it answers another task)",
        minimum=0.0,
        maximum=1.0,
    )
    canary_max_error_increase: float = setting(
        0.01,
        "roll back when the canary's share of failed requests exceeds stable's by more than this",
        minimum=0.0,
        maximum=1.0,
    )
    canary_max_p99_increase_ms: float = setting(
        50.0, "roll back when the canary's p99 latency exceeds stable's by more than this (ms)", minimum=0.0
    )
    canary_replay_images: int = setting(
        500, "logged images replayed through both versions to measure their agreement", minimum=1
    )

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True)
class ServingConfig:
    """How `fmnist serve` (and the log proxy) listen and what they accept; TF Serving's defaults."""

    model_base_path: str = setting(
        "",
        "TF Serving base path: <base>/<model>/<version>/",
        default_text="<serving-dir>/models.config if it exists, else <serving-dir>",
        tf_serving_flag="model_base_path",
    )
    model_config_file: str = setting(
        "",
        "a TF Serving models.config (text ModelServerConfig): models, version policies, labels; "
        "re-read when it changes; replaces --model-base-path",
        tf_serving_flag="model_config_file",
    )
    host: str = setting("127.0.0.1", "address to listen on (loopback only by default)")
    port: int = setting(8500, "gRPC port (TF Serving's)", minimum=0, maximum=65535, tf_serving_flag="port")
    rest_api_port: int = setting(
        8501,
        "REST port (TF Serving's); 0: no REST",
        minimum=0,
        maximum=65535,
        tf_serving_flag="rest_api_port",
    )
    rest_api_enable_cors_support: bool = setting(
        False,
        "answer CORS preflight (OPTIONS) and add CORS headers to REST answers, as TF Serving's flag does",
        tf_serving_flag="rest_api_enable_cors_support",
    )
    poll_seconds: float = setting(
        2.0, "how often to look for new versions and a changed models.config", above=0.0,
        tf_serving_flag="file_system_poll_wait_seconds",
    )  # fmt: skip
    max_batch: int = setting(1024, "largest number of examples in one request", minimum=1)
    max_message_mb: int = setting(64, "largest gRPC message and REST body, in MB", minimum=1)
    workers: int = setting(32, "threads answering requests", minimum=1)
    enable_batching: bool = setting(
        False, "batch concurrent requests into one model call", tf_serving_flag="enable_batching"
    )
    batching_parameters_file: str = setting(
        "", "TF Serving BatchingParameters (text): max_batch_size, batch_timeout_micros, ...",
        default_text="TF Serving's defaults", tf_serving_flag="batching_parameters_file",
    )  # fmt: skip
    monitoring_config_file: str = setting(
        "", "TF Serving MonitoringConfig (text); prometheus_config { enable: true } serves metrics",
        default_text="no metrics", tf_serving_flag="monitoring_config_file",
    )  # fmt: skip
    request_log_dir: str = setting("", "write sampled PredictionLog TFRecords here", default_text="off")
    request_log_sampling: float = setting(1.0, "share of requests logged", minimum=0.0, maximum=1.0)
    request_log_max_mb: int = setting(
        1024, "keep at most this many MB of request logs: the oldest files go first; 0: no cap", minimum=0
    )
    request_log_max_days: float = setting(
        30.0, "delete request-log files older than this many days; 0: no cap", minimum=0.0
    )
    canary_percent: float = setting(
        10.0,
        "percent of the requests naming no version that go to the 'canary' label's version, the rest to "
        "'stable' (sticky per x-client-id); 10: the canary gets 1,000 answers by 10,000 requests, "
        "enough for the drift and accuracy-estimate checks, while a bad canary reaches a tenth of "
        "clients; 100: all to the canary, as TF Serving's rule (the newest version) does",
        minimum=0.0,
        maximum=100.0,
    )
    estimate_window: int = setting(
        2000,
        "with request logging, estimate each version's accuracy without labels over its newest N "
        "answers (images), exported as Prometheus gauges; 0: off",
        minimum=0,
    )

    def __post_init__(self) -> None:
        validate(self)
        paths = ("model_base_path", "model_config_file", "request_log_dir", "batching_parameters_file")
        for name in (*paths, "monitoring_config_file"):
            object.__setattr__(self, name, absolute(getattr(self, name)))


MLMD_PASSWORD_ENV = "FMNIST_MLMD_PASSWORD"  # the MySQL password never goes on a command line
_MYSQL_ADDRESS = re.compile(
    r"(?:(?P<user>[^@/]+)@)?(?:unix\((?P<socket>[^)]+)\)|(?P<host>[^:/@]+)(?::(?P<port>\d{1,5}))?)"
    r"/(?P<database>[A-Za-z0-9_$]+)"
)


@dataclass(frozen=True)
class MysqlAddress:
    """An ML Metadata store on MySQL or MariaDB: `[USER@]HOST[:PORT]/DATABASE` or `[USER@]unix(SOCKET)/DB`.

    The password is read from `$FMNIST_MLMD_PASSWORD`, never from a flag.
    """

    database: str
    user: str = "root"
    host: str = "127.0.0.1"
    port: int = 3306
    socket: str = ""

    @classmethod
    def parse(cls, text: str, flag: str = "--metadata-mysql") -> MysqlAddress:
        match = _MYSQL_ADDRESS.fullmatch(text)
        if match is None or not 0 < int(match["port"] or 3306) < 65536:
            raise ConfigError(
                f"{flag} {text}: expected [USER@]HOST[:PORT]/DATABASE or [USER@]unix(SOCKET)/DATABASE"
            )
        return cls(
            database=match["database"],
            user=match["user"] or "root",
            host=match["host"] or "localhost",
            port=int(match["port"] or 3306),
            socket=match["socket"] or "",
        )

    @property
    def password(self) -> str:
        return os.environ.get(MLMD_PASSWORD_ENV, "")

    def __str__(self) -> str:
        where = f"unix({self.socket})" if self.socket else f"{self.host}:{self.port}"
        return f"{self.user}@{where}/{self.database}"


@dataclass(frozen=True)
class PipelineConfig:
    """Where things live and how the pipeline runs; derived paths default under `workdir`."""

    workdir: str = setting("workdir", "everything the project writes, unless a path below says otherwise")
    pipeline_name: str = setting(MODEL_NAME, "the pipeline's name in ML Metadata")
    model_name: str = setting(MODEL_NAME, "the served model's name (the TF Serving model directory)")
    data_dir: str = setting("", "TFRecords from `fmnist data prepare`", default_text="<workdir>/data")
    pipeline_root: str = setting("", "TFX artifacts and the ML Metadata store",
                                 default_text="<workdir>/pipeline")  # fmt: skip
    serving_dir: str = setting(
        "",
        "TF Serving base path the Pusher writes to (with its models.config)",
        default_text="<workdir>/serving",
    )
    schema_path: str = setting("", "the curated schema", default_text="schema/schema.pbtxt of this checkout")
    enable_cache: bool = setting(True, "reuse outputs of components whose inputs did not change")
    beam_workers: int = setting(0, "DirectRunner worker processes; 0: one per core", minimum=0)
    beam_direct_mode: str = setting(
        "multi_processing",
        "DirectRunner mode: worker processes, or in_memory (one process: faster on small slices)",
        choices=("multi_processing", "in_memory"),
    )
    beam_runner: str = setting(
        "DirectRunner",
        "Beam runner of the data components (templates in pipeline/beam_runners.py)",
        choices=BEAM_RUNNERS,
    )
    beam_args: str = setting("", 'extra Beam arguments, shell-quoted: "--project=p --region=europe-west4"')
    metadata_mysql: str = setting(
        "",
        "ML Metadata on a MySQL/MariaDB server a team shares, [USER@]HOST[:PORT]/DATABASE or "
        f"[USER@]unix(SOCKET)/DATABASE; password from ${MLMD_PASSWORD_ENV}",
        default_text="SQLite in <pipeline-root>/metadata.sqlite",
    )
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    spans: SpansConfig = field(default_factory=SpansConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)

    def __post_init__(self) -> None:
        validate(self)
        if not self.workdir:
            raise ConfigError("--workdir: must not be empty")
        try:
            shlex.split(self.beam_args)
        except ValueError as err:
            raise ConfigError(f"--beam-args: not valid shell quoting: {err}") from None
        if self.metadata_mysql:
            MysqlAddress.parse(self.metadata_mysql)  # refused now, before any work

        workdir = absolute(self.workdir)
        derived = {
            "workdir": workdir,
            "data_dir": absolute(self.data_dir) or os.path.join(workdir, "data"),
            "pipeline_root": absolute(self.pipeline_root) or os.path.join(workdir, "pipeline"),
            "serving_dir": absolute(self.serving_dir) or os.path.join(workdir, "serving"),
            "schema_path": absolute(self.schema_path) or DEFAULT_SCHEMA,
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)

    @property
    def metadata_path(self) -> str:
        """The MLMD SQLite store, kept with the artifacts it describes (unless `metadata_mysql` is set)."""
        return os.path.join(self.pipeline_root, "metadata.sqlite")

    @property
    def intake_dir(self) -> str:
        """Where the span planner stages the run's span for SpanExampleGen (`core.spans.stage_span`)."""
        return os.path.join(self.pipeline_root, INTAKE_DIR_NAME)

    @property
    def span_ledger(self) -> str:
        """The span ledger: the loop's verdicts on each span (`core/ledger.py`)."""
        return os.path.join(self.pipeline_root, SPAN_LEDGER_NAME)

    @property
    def mysql(self) -> MysqlAddress | None:
        """The MySQL store to use instead of SQLite, if any."""
        return MysqlAddress.parse(self.metadata_mysql) if self.metadata_mysql else None

    @property
    def metadata_location(self) -> str:
        """Where the ML Metadata store is, for messages."""
        return f"mysql {self.mysql}" if self.mysql else self.metadata_path

    @property
    def model_serving_dir(self) -> str:
        """`<serving_dir>/<model_name>`: the directory whose numeric children TF Serving loads."""
        return os.path.join(self.serving_dir, self.model_name)

    def beam_pipeline_args(self, workers: int | None = None) -> list[str]:
        """Beam arguments: DirectRunner in `beam_direct_mode`, or `--runner=<beam_runner>` and `beam_args`.

        DirectRunner gets `workers` processes, else `beam_workers`, else 0,
        which Beam reads as one per core of the machine that runs it: a spec
        compiled here does not carry this machine's core count.
        """
        extra = shlex.split(self.beam_args)
        if self.beam_runner != "DirectRunner":
            return [f"--runner={self.beam_runner}", *extra]
        if self.beam_direct_mode == "in_memory":
            return ["--direct_running_mode=in_memory", *extra]
        count = workers or self.beam_workers
        return ["--direct_running_mode=multi_processing", f"--direct_num_workers={count}", *extra]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def replace(config: Any, **changes: Any) -> Any:
    """A copy of a (frozen) configuration with `changes`; nested sections by name (`training={...}`)."""
    resolved = {}
    for name, value in changes.items():
        current = getattr(config, name)
        resolved[name] = dataclasses.replace(current, **value) if isinstance(value, dict) else value
    return dataclasses.replace(config, **resolved)
