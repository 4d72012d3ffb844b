"""The span ledger: records survive a round trip, a damaged file is named, a replace is all or nothing."""

from pathlib import Path

import pytest

from core.errors import InputError
from core.ledger import ACCEPTED, MODEL, REFUSED, Record, append, read_ledger


def test_records_come_back_as_written_in_order(tmp_path: Path):
    path = str(tmp_path / "pipeline" / "span_ledger.jsonl")
    assert read_ledger(path) == []  # before the first run
    append(path, [Record(1, ACCEPTED, examples="/x/SpanExampleGen/examples/7", images=150)])
    append(path, [Record(1, MODEL, blessed=True, against_served=False, pushed_version=17)])
    append(path, [Record(2, REFUSED, gate="drift", reason="span 2 drifted")])
    records = read_ledger(path)
    assert [(r.span, r.event) for r in records] == [(1, ACCEPTED), (1, MODEL), (2, REFUSED)]
    assert records[0].images == 150 and records[1].pushed_version == 17 and records[2].gate == "drift"
    assert all(r.time for r in records)  # stamped when written
    assert '"images"' not in Path(path).read_text().splitlines()[1]  # defaults are left out of a line


def test_a_damaged_line_is_bad_input_naming_the_file_and_line(tmp_path: Path):
    path = tmp_path / "span_ledger.jsonl"
    append(str(path), [Record(1, ACCEPTED)])
    path.write_text(path.read_text() + '{"span": 2, "event": "ingested"\n')
    with pytest.raises(InputError, match=rf"{path}, line 2: not a ledger record"):
        read_ledger(str(path))
    path.write_text('{"span": 1, "event": "exploded"}\n')
    with pytest.raises(InputError, match="line 1: unknown event 'exploded'"):
        read_ledger(str(path))


def test_an_append_that_fails_leaves_the_ledger_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "span_ledger.jsonl"
    append(str(path), [Record(1, ACCEPTED)])
    before = path.read_bytes()

    def full_disk(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.replace", full_disk)
    with pytest.raises(OSError):
        append(str(path), [Record(2, ACCEPTED)])
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["span_ledger.jsonl"]  # no temporary file left
