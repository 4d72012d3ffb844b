"""The atomic, idempotent push: complete or absent, never twice for one model."""

import json
from pathlib import Path

import pytest

from components import pusher


def fake_model(path: Path) -> Path:
    (path / "variables").mkdir(parents=True)
    (path / "variables" / "variables.index").write_bytes(b"index")
    (path / "saved_model.pb").write_bytes(b"graph")
    return path


def test_publish_writes_a_complete_numeric_version(tmp_path: Path):
    model = fake_model(tmp_path / "model")
    base = tmp_path / "serving" / "fashion_mnist"
    version = pusher.publish_version(str(model), str(base), "uri://model/1")
    pushed = base / str(version)
    assert (pushed / "saved_model.pb").read_bytes() == b"graph"
    assert (pushed / "variables" / "variables.index").read_bytes() == b"index"
    assert json.loads((pushed / pusher.PUSH_RECORD).read_text())["model_uri"] == "uri://model/1"
    assert sorted(p.name for p in base.iterdir()) == [str(version)]


def test_versions_increase_even_within_one_second(tmp_path: Path):
    model = fake_model(tmp_path / "model")
    base = str(tmp_path / "serving")
    first = pusher.publish_version(str(model), base, "a")
    second = pusher.publish_version(str(model), base, "b")
    assert second > first
    assert pusher.numeric_versions(base) == [first, second]
    assert pusher.version_of_model(base, "a") == first
    assert pusher.version_of_model(base, "b") == second
    assert pusher.version_of_model(base, "c") is None


def test_crash_during_copy_leaves_no_loadable_or_temporary_directory(tmp_path: Path, monkeypatch):
    model = fake_model(tmp_path / "model")
    base = tmp_path / "serving"
    original_copy = pusher.io_utils.copy_dir

    def copy_then_crash(src: str, dst: str, *args, **kwargs):
        original_copy(src, dst, *args, **kwargs)  # the files land under the temporary name...
        raise OSError("No space left on device")  # ...and the disk fills before the rename

    monkeypatch.setattr(pusher.io_utils, "copy_dir", copy_then_crash)
    with pytest.raises(OSError, match="No space left"):
        pusher.publish_version(str(model), str(base), "uri")
    assert list(base.iterdir()) == []


def test_non_numeric_entries_are_not_versions(tmp_path: Path):
    for name in ("17", ".tmp-18-abc", "notes", "0019"):
        (tmp_path / name).mkdir()
    assert pusher.numeric_versions(str(tmp_path)) == [17, 19]
