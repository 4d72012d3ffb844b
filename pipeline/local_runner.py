"""Run the pipeline on this machine with TFX's LocalDagRunner.

One runner file per orchestrator. The runner compiles the pipeline from the
configuration alone (`pipeline/definition.py`, the same DAG that
`kubeflow_runner.py` compiles for Kubeflow Pipelines and Vertex AI) and runs
the compiled IR; which span the run takes and what it is compared with is
decided inside the DAG. Around it, the runner checks the inputs, holds the
run lock, points temporary files at one directory, and collects the report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator

import tensorflow as tf
from absl import logging as absl_logging
from tfx import v1 as tfx
from tfx.dsl.compiler import compiler
from tfx.orchestration.portable.input_resolution import channel_resolver
from tfx.proto.orchestration import pipeline_pb2

from components.span_planner import PLAN_LOG_PREFIX
from core.config import PipelineConfig, is_uri
from core.errors import ConfigError, InputError, PipelineError
from core.spans import GOLD_SPLIT_DIR, gold_file_pattern, spans_on_disk
from pipeline.definition import create_pipeline
from pipeline.metadata import connection_config, executions_in_all_contexts
from pipeline.report import RunReport, collect_run_report, peak_rss_mb
from pipeline.retention import apply_retention
from pipeline.run_guard import cancel_abandoned_executions, exclusive_run

log = logging.getLogger(__name__)

PROGRESS_MARKERS = (
    "is running.",
    "is finished.",
    "is cached",
    "Model pushed",
    "Model version",
    PLAN_LOG_PREFIX,
)


class _ProgressFilter(logging.Filter):
    """Keep TFX's per-component start/finish lines and errors; drop the rest.

    TFX 1.16 warns on every component about MLMD query features and payload
    formats it falls back from; none of it is actionable for a user of this
    pipeline. The full log is one `--verbose` away.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or any(m in record.getMessage() for m in PROGRESS_MARKERS)


def show_component_progress(verbose: bool = False) -> None:
    """Print one line as each component starts and ends, instead of TFX's full INFO log."""
    absl_logging.set_verbosity(absl_logging.INFO)
    if verbose:
        return
    # Beam relays every worker's warnings (missing python-snappy, discarded flags) to the parent.
    logging.getLogger("apache_beam").setLevel(logging.ERROR)
    logger = logging.getLogger("absl")
    if not any(isinstance(f, _ProgressFilter) for h in logger.handlers for f in h.filters):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        handler.addFilter(_ProgressFilter())
        logger.addHandler(handler)
        logger.propagate = False


def check_inputs(config: PipelineConfig) -> None:
    """Fail early, naming the path, when there are no spans, or the gold test set or the schema is missing.

    A local run keeps ML Metadata in SQLite under the pipeline root unless it
    is on MySQL; SQLite cannot open a file in an object store.
    """
    if is_uri(config.pipeline_root) and config.mysql is None:
        raise ConfigError(
            f"--pipeline-root {config.pipeline_root}: ML Metadata's SQLite file cannot live in an object "
            "store; give --metadata-mysql (or a local --pipeline-root)"
        )
    gold = f"{config.data_dir}/{GOLD_SPLIT_DIR}"
    if not tf.io.gfile.glob(f"{config.data_dir}/{gold_file_pattern()}"):
        raise InputError(f"{gold}: no TFRecords; run `fmnist data prepare --workdir {config.workdir}` first")
    if not spans_on_disk(config.data_dir):
        raise InputError(
            f"{config.data_dir}: no spans (span-<N>/*.tfrecord.gz); run `fmnist data prepare "
            f"--workdir {config.workdir}` first"
        )
    if not tf.io.gfile.exists(config.schema_path):
        raise InputError(f"{config.schema_path}: curated schema not found")


RUN_TEMP_PREFIX = "fmnist-run-"  # then the run's process id and a random part


def remove_abandoned_run_temp_dirs(parent: str) -> list[str]:
    """Delete the temp dirs of runs whose process is gone (killed hard, no cleanup ran); return them."""
    removed = []
    for path in glob.glob(os.path.join(parent, f"{RUN_TEMP_PREFIX}*-*")):
        pid = os.path.basename(path)[len(RUN_TEMP_PREFIX) :].split("-")[0]
        if pid.isdigit() and not process_exists(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


@contextlib.contextmanager
def run_temp_dir() -> Iterator[str]:
    """Point the run's temporary files (this process and Beam's workers) at one directory, deleted after.

    TFX 1.16 repackages its own installation as a 52 MB sdist under the system
    temp dir every time a Beam component's executor starts
    (`tfx.utils.dependency_utils.build_ephemeral_package`, meant for remote
    Beam workers; the DirectRunner ignores it) and never deletes it: a run
    starts up to six Beam executors (ExampleGens, StatisticsGens, Transform,
    Evaluator), so up to 312 MB a run, and a daily loop fills the disk. A run
    killed hard cannot clean up: the next run removes what it left.
    """
    previous_tempdir, previous_env = tempfile.tempdir, os.environ.get("TMPDIR")
    remove_abandoned_run_temp_dirs(tempfile.gettempdir())
    with tempfile.TemporaryDirectory(prefix=f"{RUN_TEMP_PREFIX}{os.getpid()}-") as path:
        tempfile.tempdir = os.environ["TMPDIR"] = path
        try:
            yield path
        finally:
            tempfile.tempdir = previous_tempdir
            if previous_env is None:
                os.environ.pop("TMPDIR", None)
            else:
                os.environ["TMPDIR"] = previous_env


class PipelineFailedError(PipelineError):
    """A component failed; `report` still says what ran, and the message what broke."""

    def __init__(self, report: RunReport):
        super().__init__(report.error)
        self.report = report

    def summary(self) -> str:
        """One line: which step failed and the first line of why (the report holds the rest)."""
        failed = [row.component for row in self.report.components if row.state == "FAILED"]
        where = f" in {failed[0]}" if failed else ""
        why = (self.report.error or "").splitlines()[0] if self.report.error else "unknown error"
        return f"the run failed{where}: {why} (the report above says why in full)"


def clean_up(config: PipelineConfig) -> str | None:
    """Apply the retention policy after a run (`pipeline/retention.py`); what it did, in one line.

    A file that cannot be deleted does not fail the run that just finished:
    the report says so, and the next run's clean-up tries again.
    """
    if not config.retention.apply_retention:
        return None
    try:
        return apply_retention(config).describe()
    except (OSError, tf.errors.OpError) as err:
        log.warning("retention could not finish: %s; the next run tries again", err)
        return f"retention could not finish ({err}); the next run tries again"


def resolve_channels_by_filter_query() -> None:
    """Make TFX's input resolution ask ML Metadata for a channel's producers in one query.

    Without it each input channel of each node reads every execution the
    pipeline ever had (`pipeline/metadata.py: executions_in_all_contexts` says
    why and what it cost), so a daily run's wall time outside its components
    grows with its history. Same executions, same artifacts; only the query
    changes. TFX 1.16.0 is pinned, so the function replaced here is known.
    """
    channel_resolver._get_executions_by_all_contexts = executions_in_all_contexts


def compile_pipeline(config: PipelineConfig) -> pipeline_pb2.Pipeline:
    """The pipeline's IR for LocalDagRunner: `create_pipeline(config)` with this machine's ML Metadata."""
    return compiler.Compiler().compile(create_pipeline(config, connection_config(config)))


def run_compiled(config: PipelineConfig, ir: pipeline_pb2.Pipeline, verbose: bool = False) -> RunReport:
    """Run a compiled pipeline once (a copy: LocalDagRunner fills in the run id) and return the report.

    Raises `PipelineFailedError` with the report on failure, `PipelineBusyError`
    at once when another run holds the pipeline root.
    """
    check_inputs(config)
    show_component_progress(verbose)
    resolve_channels_by_filter_query()
    with exclusive_run(config):
        canceled = cancel_abandoned_executions(config)
        if canceled:
            log.warning("a previous run was killed during %s; those steps run again", ", ".join(canceled))
        started = time.monotonic()
        error: Exception | None = None
        try:
            with run_temp_dir():
                this_run = pipeline_pb2.Pipeline()
                this_run.CopyFrom(ir)
                tfx.orchestration.LocalDagRunner().run_with_ir(this_run)
        except Exception as err:  # a component failed: the report says which, the error says why
            error = err
        report = collect_run_report(config)
        cleaned = clean_up(config)
        report = dataclasses.replace(
            report,
            wall_seconds=round(time.monotonic() - started, 1),
            rerun_after_killed=canceled,
            peak_rss_mb=peak_rss_mb(),
            error=f"{type(error).__name__}: {error}" if error is not None else None,
            retention=cleaned,
        )
    if error is not None:
        raise PipelineFailedError(report) from error
    return report


def run(config: PipelineConfig, verbose: bool = False) -> RunReport:
    """Compile the pipeline from `config` and run it once (`fmnist run`)."""
    return run_compiled(config, compile_pipeline(config), verbose)
