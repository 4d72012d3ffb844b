"""The staged rollout: labels in TF Serving's models.config, promote and rollback, atomic rewrites."""

import threading
from pathlib import Path

import pytest

from cli.main import main
from core.errors import EXIT_BAD_INPUT
from serving.model_config import read_model_config
from serving.rollout import (
    Rollout,
    RolloutError,
    models_config_path,
    promote,
    push_canary,
    read_rollout,
    rollback,
    served_version,
)

MODEL = "fashion_mnist"


def labels_in_config(serving_dir: Path) -> tuple[dict[str, int], frozenset[int]]:
    (source,) = read_model_config(models_config_path(str(serving_dir)))
    return source.labels, source.specific


def test_the_first_push_is_stable_and_canary_later_pushes_are_canaries(tmp_path: Path):
    assert push_canary(str(tmp_path), MODEL, 10) == Rollout(stable=10, canary=10)
    assert push_canary(str(tmp_path), MODEL, 20) == Rollout(stable=10, canary=20)
    assert push_canary(str(tmp_path), MODEL, 30) == Rollout(stable=10, canary=30)
    labels, served = labels_in_config(tmp_path)
    assert labels == {"stable": 10, "canary": 30} and served == {10, 30}  # 20 was never promoted: unloaded
    assert served_version(str(tmp_path), MODEL) == 10


def test_promote_then_rollback_moves_stable_and_keeps_the_way_back_loaded(tmp_path: Path):
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
    push_canary(str(workdir / "serving"), MODEL, 10)
    assert main(["promote", "--workdir", str(workdir)]) == EXIT_BAD_INPUT
    assert (
        "fashion_mnist: nothing to promote (stable 10, canary 10, no way back yet)" in capsys.readouterr().err
    )
    with pytest.raises(RolloutError, match="nothing to roll back to"):
        rollback(str(workdir / "serving"), MODEL)
    push_canary(str(workdir / "serving"), MODEL, 20)
    assert main(["promote", "--workdir", str(workdir)]) == 0
    assert "promoted: stable 20, canary 20, way back: 10" in capsys.readouterr().out
    assert main(["labels", "--workdir", str(workdir), "--json"]) == 0
    assert capsys.readouterr().out.strip() == '{"stable": 20, "canary": 20, "history": [10]}'


def test_other_models_in_the_models_config_are_kept(tmp_path: Path):
    (tmp_path / "models.config").write_text(
        'model_config_list { config { name: "other" base_path: "/models/other" } }'
    )
    push_canary(str(tmp_path), MODEL, 10)
    names = [s.name for s in read_model_config(models_config_path(str(tmp_path)))]
    assert names == ["other", MODEL]


def test_a_reader_never_sees_a_half_written_models_config(tmp_path: Path):
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
