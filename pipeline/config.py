"""The one typed configuration of the project, with defaults that run on a laptop.

Every knob lives here; the CLI generates one flag per field (`--epochs`,
`--workdir`, ...) so nothing is configured in two places. Paths are strings so
that any filesystem TFX supports (local, `gs://`, ...) works unchanged.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from dataclasses import dataclass, field


@dataclass
class TrainingConfig:
    """How the Trainer fits the CNN (handed to `run_fn` through `custom_config`)."""

    epochs: int = 12
    batch_size: int = 256
    learning_rate: float = 3e-3
    # Fraction of the *training* split held out for early stopping; the test split is never used.
    validation_fraction: float = 0.1
    early_stopping_patience: int = 3
    # Augmentation that suits clothing: horizontal flips, and shifts by up to this
    # fraction of the image size (0 turns shifts off). Never vertical flips.
    random_flip: bool = True
    random_shift: float = 0.0
    conv_filters: tuple[int, ...] = (32, 64)
    dense_units: int = 256
    dropout: float = 0.4
    # Cap on steps per epoch; 0 means a full pass. Tests use a few steps.
    max_steps_per_epoch: int = 0
    # "bfloat16" computes in bfloat16 with float32 weights (1.5x faster on CPUs with
    # AVX512-BF16 or AMX), "float32" everywhere; "auto" picks bfloat16 where the CPU has it.
    precision: str = "auto"
    seed: int = 42


@dataclass
class EvaluationConfig:
    """The TFMA gate: only a model that passes it is blessed and pushed."""

    # Absolute floor on overall SparseCategoricalAccuracy of the official test set.
    accuracy_floor: float = 0.90
    # Largest drop below the last blessed model allowed (0.005 = half a point).
    max_accuracy_drop: float = 0.005


@dataclass
class DriftConfig:
    """How `fmnist drift` measures and judges drift (TFDV distances on binned image features).

    Distances between an empirical sample and its true distribution shrink with
    the sample size n, so thresholds do too: Jensen-Shannon divergence
    `jsd_base + jsd_per_image / n`, L-infinity `linf_base + linf_per_sqrt_image / sqrt(n)`.
    The defaults flag no clean sample of 200 images or more and every shift of
    benchmarks/drift_benchmark.py (figures in the README).
    """

    bins: int = 20  # fixed-width bins on [0, 1] for each image feature and the confidence
    jsd_base: float = 0.02
    jsd_per_image: float = 6.0
    linf_base: float = 0.03
    linf_per_sqrt_image: float = 1.0
    min_images: int = 50  # smaller batches cannot be judged


@dataclass
class PipelineConfig:
    """Where things live and how the pipeline runs; derived paths default under `workdir`."""

    workdir: str = "workdir"
    pipeline_name: str = "fashion_mnist"
    model_name: str = "fashion_mnist"
    data_dir: str = ""  # TFRecords from `fmnist data prepare`; default <workdir>/data
    pipeline_root: str = ""  # TFX artifacts and the MLMD store; default <workdir>/pipeline
    serving_dir: str = ""  # TF Serving base path; default <workdir>/serving
    schema_path: str = ""  # curated schema; default schema/schema.pbtxt of this checkout
    enable_cache: bool = True
    beam_workers: int = 0  # DirectRunner processes; 0 means one per core
    # The Beam runner of the data components (ExampleGen, StatisticsGen, Transform,
    # Evaluator): DirectRunner here; DataflowRunner, FlinkRunner, SparkRunner or
    # PortableRunner elsewhere, with their arguments in `beam_args` (templates in
    # pipeline/beam_runners.py).
    beam_runner: str = "DirectRunner"
    beam_args: str = ""  # extra Beam arguments, shell-quoted: "--project=p --region=europe-west4"
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir or os.path.join(self.workdir, "data")
        self.pipeline_root = self.pipeline_root or os.path.join(self.workdir, "pipeline")
        self.serving_dir = self.serving_dir or os.path.join(self.workdir, "serving")
        self.schema_path = self.schema_path or os.path.join(
            os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "schema", "schema.pbtxt"
        )

    @property
    def metadata_path(self) -> str:
        """The MLMD SQLite store, kept with the artifacts it describes."""
        return os.path.join(self.pipeline_root, "metadata.sqlite")

    @property
    def model_serving_dir(self) -> str:
        """`<serving_dir>/<model_name>`: the directory whose numeric children TF Serving loads."""
        return os.path.join(self.serving_dir, self.model_name)

    def beam_pipeline_args(self) -> list[str]:
        """Beam arguments: DirectRunner multi-processing (one worker per core unless configured),
        or `--runner=<beam_runner>` followed by `beam_args`."""
        extra = shlex.split(self.beam_args)
        if self.beam_runner != "DirectRunner":
            return [f"--runner={self.beam_runner}", *extra]
        workers = self.beam_workers or os.cpu_count() or 1
        return ["--direct_running_mode=multi_processing", f"--direct_num_workers={workers}", *extra]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
