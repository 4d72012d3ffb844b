"""The staged rollout: labels in TF Serving's models.config, promote and rollback, atomic rewrites."""

import shutil
import threading
from pathlib import Path

import pytest

from cli.main import main
from core.errors import EXIT_BAD_INPUT
from release.rollout import (
    Rollout,
    RolloutError,
    models_config_path,
    promote,
    push_canary,
    read_rollout,
    rollback,
    served_version,
)
from serving.model_config import read_model_config

MODEL = "fashion_mnist"


def labels_in_config(serving_dir: Path) -> tuple[dict[str, int], frozenset[int]]:
    (source,) = read_model_config(models_config_path(str(serving_dir)))
    return source.labels, source.specific


def on_disk(serving_dir: Path, *versions: int) -> None:
    """Version directories as the Pusher leaves them (a label may only move to a version on disk)."""
    for version in versions:
        (serving_dir / MODEL / str(version)).mkdir(parents=True, exist_ok=True)
        (serving_dir / MODEL / str(version) / "saved_model.pb").write_bytes(b"")


def pushed(serving_dir: Path, *versions: int) -> None:
    on_disk(serving_dir, *versions)
    for version in versions:
        push_canary(str(serving_dir), MODEL, version)


def files(serving_dir: Path) -> dict[str, bytes]:
    """The two files a rollout command writes, byte for byte (absent files left out)."""
    paths = (serving_dir / "models.config", serving_dir / MODEL / "rollout.json")
    return {p.name: p.read_bytes() for p in paths if p.exists()}


def test_the_first_push_is_stable_and_canary_later_pushes_are_canaries(tmp_path: Path):
    on_disk(tmp_path, 10, 20, 30)
    assert push_canary(str(tmp_path), MODEL, 10) == Rollout(stable=10, canary=10)
    assert push_canary(str(tmp_path), MODEL, 20) == Rollout(stable=10, canary=20)
    assert push_canary(str(tmp_path), MODEL, 30) == Rollout(stable=10, canary=30)
    labels, served = labels_in_config(tmp_path)
    assert labels == {"stable": 10, "canary": 30} and served == {10, 30}  # 20 was never promoted: unloaded
    assert served_version(str(tmp_path), MODEL) == 10


def test_promote_then_rollback_moves_stable_and_keeps_the_way_back_loaded(tmp_path: Path):
    on_disk(tmp_path, 10, 20, 30)
    push_canary(str(tmp_path), MODEL, 10)
    push_canary(str(tmp_path), MODEL, 20)
    assert promote(str(tmp_path), MODEL) == Rollout(stable=20, canary=20, history=(10,))
    labels, served = labels_in_config(tmp_path)
    assert labels == {"stable": 20, "canary": 20} and served == {10, 20}  # the way back stays loaded
    push_canary(str(tmp_path), MODEL, 30)
    assert labels_in_config(tmp_path) == ({"stable": 20, "canary": 30}, frozenset({10, 20, 30}))
    assert rollback(str(tmp_path), MODEL) == Rollout(stable=10, canary=10, history=())
    assert labels_in_config(tmp_path) == ({"stable": 10, "canary": 10}, frozenset({10}))
    assert read_rollout(str(tmp_path), MODEL).stable == 10


def test_promote_and_rollback_with_nothing_to_do_refuse_with_exit_2(tmp_path: Path, capsys):
    workdir = tmp_path / "w"
    assert main(["rollback", "--workdir", str(workdir)]) == EXIT_BAD_INPUT
    assert "nothing to roll back to" in capsys.readouterr().err
    pushed(workdir / "serving", 10)
    assert main(["promote", "--workdir", str(workdir)]) == EXIT_BAD_INPUT
    assert (
        "fashion_mnist: nothing to promote (stable 10, canary 10, no way back yet)" in capsys.readouterr().err
    )
    with pytest.raises(RolloutError, match="nothing to roll back to"):
        rollback(str(workdir / "serving"), MODEL)
    pushed(workdir / "serving", 20)
    assert main(["promote", "--workdir", str(workdir)]) == 0
    assert "promoted: stable 20, canary 20, way back: 10" in capsys.readouterr().out
    assert main(["labels", "--workdir", str(workdir), "--json"]) == 0
    assert capsys.readouterr().out.strip() == '{"stable": 20, "canary": 20, "history": [10], "missing": {}}'


def test_other_models_in_the_models_config_are_kept(tmp_path: Path):
    (tmp_path / "models.config").write_text(
        'model_config_list { config { name: "other" base_path: "/models/other" } }'
    )
    pushed(tmp_path, 10)
    names = [s.name for s in read_model_config(models_config_path(str(tmp_path)))]
    assert names == ["other", MODEL]


def test_a_reader_never_sees_a_half_written_models_config(tmp_path: Path):
    on_disk(tmp_path, *range(1, 12), *range(100, 130))
    push_canary(str(tmp_path), MODEL, 1)
    for version in range(2, 12):  # a long history makes the file longer than one write
        push_canary(str(tmp_path), MODEL, version)
        promote(str(tmp_path), MODEL)
    stop, seen, errors = threading.Event(), [], []

    def reader():
        while not stop.is_set():
            try:
                seen.append(labels_in_config(tmp_path)[0]["stable"])
            except Exception as err:  # a torn file would not parse
                errors.append(err)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    for version in range(100, 130):
        rollback(str(tmp_path), MODEL)
        push_canary(str(tmp_path), MODEL, version)
        promote(str(tmp_path), MODEL)
    stop.set()
    for thread in threads:
        thread.join()
    assert errors == [] and len(seen) > 30


def serving_args(workdir: Path) -> list[str]:
    return ["--workdir", str(workdir)]


def test_rollback_to_a_deleted_version_exits_2_naming_it_and_changes_nothing(tmp_path: Path, capsys):
    serving = tmp_path / "serving"
    pushed(serving, 10, 20)
    promote(str(serving), MODEL)  # stable 20, the way back 10
    shutil.rmtree(serving / MODEL / "10")  # an operator cleans up "old" versions
    before = files(serving)
    assert main(["rollback", *serving_args(tmp_path)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "version 10 (the way back) is not on disk" in err and "nothing changed" in err
    assert files(serving) == before  # the server keeps serving stable 20


def test_promote_to_a_deleted_canary_exits_2_naming_it_and_changes_nothing(tmp_path: Path, capsys):
    serving = tmp_path / "serving"
    pushed(serving, 10, 20)
    shutil.rmtree(serving / MODEL / "20")
    before = files(serving)
    assert main(["promote", *serving_args(tmp_path)]) == EXIT_BAD_INPUT
    assert "version 20 (the canary) is not on disk" in capsys.readouterr().err
    assert files(serving) == before


def test_labels_says_which_labelled_versions_are_missing_on_disk(tmp_path: Path, capsys):
    serving = tmp_path / "serving"
    assert main(["labels", *serving_args(tmp_path)]) == 0
    assert "nothing pushed yet" in capsys.readouterr().out and not serving.exists()  # a look writes nothing
    pushed(serving, 10, 20)
    shutil.rmtree(serving / MODEL / "20")
    (serving / MODEL / "10" / "saved_model.pb").unlink()  # a directory without its model is not a version
    assert main(["labels", *serving_args(tmp_path)]) == EXIT_BAD_INPUT
    out, err = capsys.readouterr()
    assert "stable 10, canary 20" in out  # the state is still shown
    assert "not on disk: stable 10, canary 20" in err
    assert main(["labels", "--json", *serving_args(tmp_path)]) == EXIT_BAD_INPUT
    assert '"missing": {"stable": 10, "canary": 20}' in capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "empty file"),
        (b'{"stable": 10, "canary"', "not JSON"),
        (b"\xff\xfe\x00", "not JSON"),
        (b"[10, 20]", "expected a JSON object"),
        (b'{"stable": "10", "canary": 10, "history": []}', "'stable' must be a version number or null"),
        (b'{"stable": true, "canary": 10, "history": []}', "'stable' must be a version number or null"),
        (b'{"stable": 10, "canary": 10, "history": 10}', "'history' must be a list of version numbers"),
        (b'{"stable": 10, "canary": 10, "history": [1.5]}', "'history' must be a list of version numbers"),
    ],
    ids=["empty", "cut-short", "not-utf8", "list", "string-version", "bool-version", "history-int", "float"],
)
@pytest.mark.parametrize("command", ["labels", "promote", "rollback"])
def test_a_damaged_rollout_json_exits_2_naming_it_and_nothing_is_written(
    tmp_path: Path, capsys, command: str, content: bytes, problem: str
):
    serving = tmp_path / "serving"
    pushed(serving, 10, 20)
    state = serving / MODEL / "rollout.json"
    state.write_bytes(content)
    before = files(serving)
    assert main([command, *serving_args(tmp_path)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert f"{state}: " in err and problem in err
    assert files(serving) == before


def test_promote_with_a_malformed_models_config_changes_neither_file(tmp_path: Path, capsys):
    serving = tmp_path / "serving"
    pushed(serving, 10, 20)
    config = serving / "models.config"
    config.write_text(config.read_text().replace("model_config_list {", "model_config_list {{", 1))
    before = files(serving)
    assert main(["promote", *serving_args(tmp_path)]) == EXIT_BAD_INPUT
    assert f"{config}: not a valid ModelServerConfig" in capsys.readouterr().err
    assert files(serving) == before  # rollout.json was not rewritten either
    config.write_text(before["models.config"].decode().replace("{{", "{", 1))  # the person fixes it
    assert main(["promote", *serving_args(tmp_path)]) == 0  # and the retry promotes
    assert labels_in_config(serving) == ({"stable": 20, "canary": 20}, frozenset({10, 20}))


class Killed(BaseException):
    """The process dying between the two renames (not an error anything would catch)."""


def interrupt_before_models_config(monkeypatch) -> None:
    """The next change renames rollout.json into place, then dies before models.config is renamed."""
    import release.rollout as module

    real = module.replace_file

    def replace_file(path: str, text: str) -> None:
        if path.endswith("models.config"):
            monkeypatch.setattr(module, "replace_file", real)
            raise Killed
        real(path, text)

    monkeypatch.setattr(module, "replace_file", replace_file)


def test_a_change_killed_between_the_two_renames_is_repaired_by_the_next_command(
    tmp_path: Path, monkeypatch, capsys
):
    serving = tmp_path / "serving"
    pushed(serving, 10, 20)
    interrupt_before_models_config(monkeypatch)
    with pytest.raises(Killed):
        promote(str(serving), MODEL)
    assert read_rollout(str(serving), MODEL).stable == 20  # the record says promoted,
    assert labels_in_config(serving)[0] == {"stable": 10, "canary": 20}  # the server still sees the old
    assert main(["labels", *serving_args(tmp_path)]) == 0
    assert "re-published from" in capsys.readouterr().err
    assert labels_in_config(serving) == ({"stable": 20, "canary": 20}, frozenset({10, 20}))


def test_retrying_a_killed_promote_publishes_what_rollout_json_records(tmp_path: Path, monkeypatch, capsys):
    serving = tmp_path / "serving"
    pushed(serving, 10, 20)
    interrupt_before_models_config(monkeypatch)
    with pytest.raises(Killed):
        promote(str(serving), MODEL)
    assert main(["promote", *serving_args(tmp_path)]) == EXIT_BAD_INPUT  # promoted already ...
    assert "nothing to promote (stable 20, canary 20, way back: 10)" in capsys.readouterr().err
    assert labels_in_config(serving) == ({"stable": 20, "canary": 20}, frozenset({10, 20}))  # ... and served
