"""The atomic, idempotent push: complete or absent, never twice for one model."""

import json
from pathlib import Path

import pytest

from components import pusher
from core.versions import version_dirs


def versions(base) -> list[int]:
    return sorted(version_dirs(str(base)))


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
    assert versions(base) == [first, second]
    assert pusher.version_of_model(base, "a") == first
    assert pusher.version_of_model(base, "b") == second
    assert pusher.version_of_model(base, "c") is None


def test_crash_during_copy_leaves_no_loadable_or_temporary_directory(tmp_path: Path, monkeypatch):
    model = fake_model(tmp_path / "model")
    base = tmp_path / "serving"
    original_copy = pusher.copy_tree

    def copy_then_crash(src: str, dst: str, *args, **kwargs):
        original_copy(src, dst, *args, **kwargs)  # the files land under the temporary name...
        raise OSError("No space left on device")  # ...and the disk fills before the rename

    monkeypatch.setattr(pusher, "copy_tree", copy_then_crash)
    with pytest.raises(pusher.PushError, match=f"cannot push version .* to {base}: No space left"):
        pusher.publish_version(str(model), str(base), "uri")
    assert list(base.iterdir()) == []


def test_read_only_serving_directory_gives_a_clear_error_and_leaves_nothing(tmp_path: Path, monkeypatch):
    model = fake_model(tmp_path / "model")
    base = tmp_path / "serving"
    base.mkdir()

    def refuse(*args, **kwargs):  # CI runs as root, where chmod cannot make a directory read-only
        raise PermissionError(13, "Read-only file system", str(base))

    monkeypatch.setattr(pusher, "copy_tree", refuse)
    with pytest.raises(pusher.PushError, match="Read-only file system.*nothing was published"):
        pusher.publish_version(str(model), str(base), "uri")
    assert list(base.iterdir()) == []


def _push_inputs(tmp_path: Path, evaluator_blessed: int, serving_check_blessed: int) -> dict:
    from tfx.types import standard_artifacts

    model = standard_artifacts.Model()
    model.uri = str(tmp_path / "trainer" / "model")
    fake_model(tmp_path / "trainer" / "model" / "Format-Serving")
    blessing = standard_artifacts.ModelBlessing()
    blessing.set_int_custom_property("blessed", evaluator_blessed)
    infra = standard_artifacts.InfraBlessing()
    infra.set_int_custom_property("blessed", serving_check_blessed)
    return {"model": [model], "model_blessing": [blessing], "infra_blessing": [infra]}


@pytest.mark.parametrize(("evaluator", "serving_check"), [(1, 0), (0, 1), (1, 1)])
def test_pusher_pushes_only_with_both_blessings(tmp_path: Path, evaluator: int, serving_check: int):
    from tfx.proto import pusher_pb2
    from tfx.types import standard_artifacts
    from tfx.utils import proto_utils

    base = tmp_path / "serving" / "fashion_mnist"
    fake_model(base / "17")  # the version serving now
    before = {p: p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp_path / "pushed")
    destination = pusher_pb2.PushDestination(
        filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=str(base))
    )
    pusher.AtomicPusherExecutor().Do(
        _push_inputs(tmp_path, evaluator, serving_check),
        {"pushed_model": [pushed]},
        {"push_destination": proto_utils.proto_to_json(destination), "custom_config": None},
    )
    assert pushed.get_int_custom_property("pushed") == int(evaluator and serving_check)
    after = {p: p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}
    if evaluator and serving_check:
        assert versions(base) == [
            17,
            int(pushed.get_string_custom_property("pushed_version")),
        ]
    else:
        assert after == before  # byte for byte


def test_only_names_tf_serving_parses_as_int64_are_versions(tmp_path: Path):
    for name in ("17", ".tmp-18-abc", "notes", "0019", "²", "99999999999999999999", "1.5"):
        (tmp_path / name).mkdir()
    (tmp_path / "20").write_text("a file, not a version directory")
    assert versions(tmp_path) == [17, 19]
