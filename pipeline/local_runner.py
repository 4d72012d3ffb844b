"""Run the pipeline on this machine with TFX's LocalDagRunner.

One runner file per orchestrator: the wiring in `pipeline.py` does not change
when the engine does.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from absl import logging as absl_logging
from tfx import v1 as tfx

from pipeline.config import PipelineConfig
from pipeline.pipeline import create_pipeline
from pipeline.report import collect_run_report, finish_report, peak_rss_mb
from pipeline.run_guard import cancel_abandoned_executions, exclusive_run

log = logging.getLogger(__name__)

PROGRESS_MARKERS = ("is running.", "is finished.", "is cached", "Model pushed", "Model version")


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
    """Fail early, naming the path, when the prepared data or the schema is missing."""
    for split in ("train", "test"):
        directory = os.path.join(config.data_dir, split)
        if not os.path.isdir(directory) or not os.listdir(directory):
            raise FileNotFoundError(
                f"{directory}: no TFRecords; run `fmnist data prepare --workdir {config.workdir}` first"
            )
    if not os.path.isfile(config.schema_path):
        raise FileNotFoundError(f"{config.schema_path}: curated schema not found")


class PipelineFailedError(RuntimeError):
    """A component failed; `report` still says what ran, and the message what broke."""

    def __init__(self, report: dict[str, Any]):
        super().__init__(report["error"])
        self.report = report


def run(config: PipelineConfig, verbose: bool = False) -> dict[str, Any]:
    """Run the whole pipeline and return the run report; raise `PipelineFailedError` with it on failure.

    Raises `PipelineBusyError` at once when another run holds the pipeline root.
    """
    check_inputs(config)
    show_component_progress(verbose)
    with exclusive_run(config.pipeline_root):
        canceled = cancel_abandoned_executions(config)
        if canceled:
            log.warning("a previous run was killed during %s; those steps run again", ", ".join(canceled))
        started = time.monotonic()
        error: Exception | None = None
        try:
            tfx.orchestration.LocalDagRunner().run(create_pipeline(config))
        except Exception as err:
            error = err
        report = finish_report(collect_run_report(config))
    report["wall_seconds"] = round(time.monotonic() - started, 1)
    if canceled:
        report["rerun_after_killed"] = canceled
    report["peak_rss_mb"] = peak_rss_mb()
    if error is not None:
        report["error"] = f"{type(error).__name__}: {error}"
        raise PipelineFailedError(report) from error
    return report
