"""The rollout's history: a line per change with who, when, why and the labels; torn lines survived."""

import json
import logging
from pathlib import Path

from cli.main import main
from core.canary_rule import HOLD, ROLL_BACK, Verdict
from core.errors import EXIT_BAD_INPUT
from release.history import history_path, read_history, who
from release.rollout import RolloutError, apply_verdict, promote, read_rollout, rollback
from tests.release.test_rollout import MODEL, pushed

EVIDENCE = {"canary_version": 20, "stable_version": 10, "canary_requests": 500}


def test_every_change_is_one_line_with_who_when_why_and_the_labels(tmp_path: Path, capsys):
    pushed(tmp_path, 10, 20)
    promote(str(tmp_path), MODEL, reason="canary looked fine")
    assert main(["rollback", "--serving-dir", str(tmp_path), "--reason", "ticket 42"]) == 0
    history = read_history(str(tmp_path), MODEL)
    assert [h["action"] for h in history] == ["push", "push", "promote", "rollback"]
    assert [h["reason"] for h in history[2:]] == ["canary looked fine", "ticket 42"]
    assert history[2]["before"] == {"stable": 10, "canary": 20, "history": []}
    assert history[2]["after"] == {"stable": 20, "canary": 20, "history": [10]}
    assert all(h["who"] == who() and "@" in h["who"] and h["time"].endswith("Z") for h in history)
    capsys.readouterr()
    assert main(["history", "--serving-dir", str(tmp_path)]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert len(shown) == 4 and "rollback: stable 20, canary 20 -> stable 10, canary 10" in shown[3]
    assert shown[3].endswith("reason: ticket 42")
    assert main(["history", "--serving-dir", str(tmp_path), "--json", "--version", "20"]) == 0
    assert [json.loads(line)["action"] for line in capsys.readouterr().out.splitlines()] == [
        "push", "promote", "rollback"
    ]  # fmt: skip


def test_a_refused_change_writes_no_line(tmp_path: Path):
    pushed(tmp_path, 10)
    before = history_path(str(tmp_path), MODEL)
    lines = Path(before).read_text()
    assert main(["rollback", "--serving-dir", str(tmp_path), "--reason", "x"]) == EXIT_BAD_INPUT
    assert Path(before).read_text() == lines


def test_a_torn_last_line_is_skipped_with_a_warning_and_the_next_line_starts_clean(tmp_path: Path, caplog):
    pushed(tmp_path, 10, 20)
    path = Path(history_path(str(tmp_path), MODEL))
    with path.open("a") as f:
        f.write('{"time": "2026-12-02T10:00:00Z", "act')  # a write cut short
    with caplog.at_level(logging.WARNING):
        assert len(read_history(str(tmp_path), MODEL)) == 2
    assert "line 3 is cut short" in caplog.text
    promote(str(tmp_path), MODEL, reason="after the crash")
    history = read_history(str(tmp_path), MODEL)
    assert [h["action"] for h in history] == ["push", "push", "promote"]


def test_an_applied_verdict_is_recorded_with_its_evidence_and_refused_when_the_labels_moved(tmp_path: Path):
    pushed(tmp_path, 10, 20)
    hold = Verdict(HOLD, ("not enough traffic",), 300)
    assert apply_verdict(str(tmp_path), MODEL, hold, EVIDENCE, "cron") == read_rollout(str(tmp_path), MODEL)
    back = apply_verdict(str(tmp_path), MODEL, Verdict(ROLL_BACK, ("worse",)), EVIDENCE, "cron")
    assert (back.stable, back.canary) == (10, 10)
    last = read_history(str(tmp_path), MODEL)[-2:]
    assert [h["action"] for h in last] == ["verdict", "canary rollback"]
    assert last[0]["verdict"] == {"decision": HOLD, "reasons": ["not enough traffic"], "more_requests": 300,
                                  "evidence": EVIDENCE}  # fmt: skip
    try:
        apply_verdict(str(tmp_path), MODEL, Verdict(ROLL_BACK, ("worse",)), EVIDENCE, "cron")
    except RolloutError as err:
        assert "the labels moved since the verdict" in str(err)
    else:
        raise AssertionError("a verdict about versions no longer canary and stable was applied")
    assert len(read_history(str(tmp_path), MODEL)) == 4


def test_rollback_after_promote_is_unchanged_by_the_history(tmp_path: Path):
    pushed(tmp_path, 10, 20)
    promote(str(tmp_path), MODEL)
    assert rollback(str(tmp_path), MODEL).stable == 10
