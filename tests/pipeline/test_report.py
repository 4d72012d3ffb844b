"""Pure parts of the run report: confused pairs and the text rendering."""

from pathlib import Path

import numpy as np

from core.vocabulary import CLASS_NAMES
from pipeline.report import ComponentRun, ModelFacts, RunReport, format_report


def test_format_report_says_why_a_model_was_not_pushed():
    report = RunReport(
        run_id="r1",
        components=[ComponentRun("Transform", "CACHED", 0.5), ComponentRun("Trainer", "COMPLETE", 12.0)],
        model=ModelFacts(
            accuracy=0.5,
            examples=300,
            per_class=dict.fromkeys(CLASS_NAMES, 0.5),
            blessed=False,
            not_blessed_because=["sparse_categorical_accuracy = 0.5000, must be >= 0.9"],
            pushed=False,
        ),
        wall_seconds=20.25,
    )
    text = format_report(report)
    assert "test accuracy: 0.5000 on 300 gold examples" in text
    assert "blessed: no\n  sparse_categorical_accuracy = 0.5000, must be >= 0.9" in text
    assert "total (sum of components)" in text and "12.5" in text
    assert "wall time (the whole run)" in text and "20.2" in text
    assert text.endswith("pushed: no")


def test_format_report_says_when_the_trainer_trained_from_scratch_instead_of_warm_starting():
    started = format_report(RunReport(run_id="r1", model=ModelFacts(warm_started_from="/served/7")))
    assert "warm-started from the served model /served/7" in started
    scratch = RunReport(run_id="r2", model=ModelFacts(not_warm_started_because="the architecture differs"))
    text = format_report(scratch)
    assert "trained from scratch, not warm-started: the architecture differs" in text
    assert "warm-started from" not in text


def test_a_saved_report_reads_back_identically(tmp_path):
    from core.config import PipelineConfig
    from pipeline.report import save_report

    report = RunReport(
        run_id="2026-11-26T00:00:00",
        components=[ComponentRun("Trainer", "COMPLETE", 1.0)],
        model=ModelFacts(accuracy=0.9, confusion_matrix=(np.eye(10, dtype=int) * 3).tolist()),
        wall_seconds=3.0,
        peak_rss_mb={"main_process": 100.0, "largest_child": 50.0},
    )
    saved, path = save_report(report, PipelineConfig(workdir=str(tmp_path)))
    assert report.confusion_matrix_png is None and saved.confusion_matrix_png.endswith("-confusion.png")
    import json

    assert format_report(RunReport.from_json(json.loads(Path(path).read_text()))) == format_report(saved)
