"""Pure parts of the run report: confused pairs and the text rendering."""

import dataclasses
from pathlib import Path

import numpy as np

from components.gold_comparison import GoldComparison, compare_on_gold
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


def comparison_facts(served: bool) -> dict:
    """A gold comparison as the Evaluator writes it: Shirt clearly lost, Coat within chance."""
    labels = np.repeat(np.arange(len(CLASS_NAMES)), 30)
    candidate = labels.copy()
    candidate[np.flatnonzero(labels == CLASS_NAMES.index("Shirt"))[:12]] = 0
    candidate[np.flatnonzero(labels == CLASS_NAMES.index("Coat"))[:2]] = 0
    comparison = compare_on_gold(labels, candidate, labels if served else None, 0.005, 0.05)
    return dataclasses.asdict(comparison)


def test_the_report_gives_both_models_intervals_and_the_paired_change_with_its_gate():
    facts = comparison_facts(served=True)
    text = format_report(RunReport(run_id="r1", model=ModelFacts(accuracy=0.9533, gold_comparison=facts)))
    assert "gold accuracy with 90% intervals (Wilson); change: candidate minus served model, paired" in text
    assert "refused when its whole interval lies below -max drop (overall 0.005, per class 0.05)" in text
    rows = {line.split()[0]: line for line in text.splitlines() if line.startswith("  ") and "[" in line}
    shirt = GoldComparison.from_dict(facts).per_class["Shirt"]
    assert rows["Shirt"].split()[1:] == [
        *shirt.candidate.text().split(),
        *shirt.served.text().split(),
        *shirt.change.text("+").split(),
        "REFUSED",
    ]
    assert rows["Coat"].endswith("passes") and rows["overall"].endswith("REFUSED")  # -14/300 overall


def test_without_a_served_model_the_report_gives_the_candidates_intervals_alone():
    text = format_report(RunReport(run_id="r1", model=ModelFacts(gold_comparison=comparison_facts(False))))
    assert "nothing served yet, no change to judge" in text and "REFUSED" not in text and "passes" not in text


def test_a_report_with_a_gold_comparison_reads_back_identically(tmp_path):
    import json

    from core.config import PipelineConfig
    from pipeline.report import save_report

    report = RunReport(run_id="r2", model=ModelFacts(accuracy=0.95, gold_comparison=comparison_facts(True)))
    saved, path = save_report(report, PipelineConfig(workdir=str(tmp_path)))
    assert RunReport.from_json(json.loads(Path(path).read_text())) == saved
