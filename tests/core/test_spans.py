"""Staging the run's span: exactly that span in the intake, cheap and fingerprint-stable when repeated."""

import os
from pathlib import Path

from core.spans import spans_on_disk, stage_span


def make_span(data: Path, span: int, files: int = 2) -> Path:
    directory = data / f"span-{span}"
    directory.mkdir(parents=True)
    for i in range(files):
        (directory / f"data-{i:05d}-of-{files:05d}.tfrecord.gz").write_bytes(b"x" * (span * 10 + i))
    (directory / "manifest.json").write_text("{}")
    (directory / "notes.txt").write_text("a person's note, not data")
    return directory


def fingerprint(directory: Path) -> list[tuple]:
    """What ExampleGen fingerprints a span by: names, sizes, modification times (to the second)."""
    return sorted((p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in directory.glob("*.tfrecord.gz"))


def test_the_intake_holds_only_the_chosen_span_and_none_of_the_stray_files(tmp_path: Path):
    data, intake = tmp_path / "data", tmp_path / "pipeline" / "intake"
    for span in (1, 2, 3):
        make_span(data, span)
    stage_span(str(data), 1, str(intake))
    stage_span(str(data), 3, str(intake))
    assert spans_on_disk(str(intake)) == [3]
    assert sorted(p.name for p in (intake / "span-3").iterdir()) == [
        "data-00000-of-00002.tfrecord.gz", "data-00001-of-00002.tfrecord.gz", "manifest.json",
    ]  # fmt: skip
    assert fingerprint(intake / "span-3") == fingerprint(data / "span-3")


def test_staging_a_span_again_keeps_its_fingerprint_and_copies_nothing(tmp_path: Path):
    data, intake = tmp_path / "data", tmp_path / "intake"
    source = make_span(data, 1)
    make_span(data, 2)
    stage_span(str(data), 1, str(intake))
    stage_span(str(data), 2, str(intake))  # another span in between
    os.utime(source / "data-00000-of-00002.tfrecord.gz", (1, 1))  # ... and the clock moved on
    before = fingerprint(source)
    staged = Path(stage_span(str(data), 1, str(intake)))
    assert fingerprint(staged) == before
    staged_file = staged / "data-00000-of-00002.tfrecord.gz"
    assert os.path.samefile(staged_file, source / "data-00000-of-00002.tfrecord.gz")  # a link, not a copy


def test_a_rewritten_span_is_staged_anew(tmp_path: Path):
    data, intake = tmp_path / "data", tmp_path / "intake"
    source = make_span(data, 1)
    stage_span(str(data), 1, str(intake))
    target = source / "data-00001-of-00002.tfrecord.gz"
    target.unlink()
    target.write_bytes(b"rewritten, longer than before")
    (source / "data-00000-of-00002.tfrecord.gz").unlink()
    staged = Path(stage_span(str(data), 1, str(intake)))
    assert sorted(p.name for p in staged.glob("*.tfrecord.gz")) == ["data-00001-of-00002.tfrecord.gz"]
    assert (staged / "data-00001-of-00002.tfrecord.gz").read_bytes() == b"rewritten, longer than before"
