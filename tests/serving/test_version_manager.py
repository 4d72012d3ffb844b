"""The version manager acts as TF Serving's: retries, int64 names, a poller that survives, availability kept.

Every test serves TF Serving's own test model (half_plus_two, built by the test).
"""

import logging
import shutil
import threading
import time
from pathlib import Path

import pytest

from serving import version_manager
from serving.servable import ModelNotFoundError
from serving.version_manager import VersionManager
from tests.serving import half_plus_two

MODEL = "default"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(half_plus_two.build(str(tmp_path_factory.mktemp("hp2") / "model")))


def version(built: Path, base: Path, number: int) -> Path:
    target = base / MODEL / str(number)
    shutil.copytree(built, target)
    return target


def states(manager: VersionManager) -> dict[int, str]:
    return {v: s.state for v, s in manager.status(MODEL).items()}


def test_a_version_caught_mid_copy_loads_once_the_copy_completes(built: Path, tmp_path: Path):
    base = tmp_path / "models"
    version(built, base, 1)
    partial = base / MODEL / "2"
    partial.mkdir()
    shutil.copy(built / "saved_model.pb", partial)  # `cp -r` order: the graph first, variables still to come
    manager = VersionManager(str(base), poll_seconds=3600, load_retry_interval_seconds=3600)
    manager.poll_once()
    assert states(manager) == {1: "AVAILABLE", 2: "END"}
    assert manager.resolve(MODEL).version == 1
    shutil.copytree(built / "variables", partial / "variables")  # the copy completes
    manager.poll_once()  # the directory changed: retried at once, not after the retry interval
    assert states(manager)[2] == "AVAILABLE" and manager.resolve(MODEL).version == 2


def test_an_unchanged_failing_version_is_retried_a_bounded_number_of_times(
    built: Path, tmp_path: Path, monkeypatch
):
    base = tmp_path / "models"
    version(built, base, 1)
    broken = version(built, base, 2)
    (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
    attempts = []
    real_load = version_manager.load_version
    monkeypatch.setattr(
        version_manager, "load_version", lambda *a, **k: attempts.append(a[1]) or real_load(*a, **k)
    )
    manager = VersionManager(
        str(base), poll_seconds=3600, max_num_load_retries=2, load_retry_interval_seconds=0
    )
    for _ in range(6):
        manager.poll_once()
    assert attempts.count(2) == 3  # the first try and max_num_load_retries=2 retries, then no more
    assert states(manager) == {1: "AVAILABLE", 2: "END"} and "Cannot parse" in manager.status(MODEL)[2].error


@pytest.mark.parametrize("name", ["99999999999999999999", "²", "1.5", "-", "notes"])
def test_names_tf_serving_does_not_parse_as_int64_are_skipped(built: Path, tmp_path: Path, name: str):
    base = tmp_path / "models"
    version(built, base, 1)
    shutil.copytree(built, base / MODEL / name)
    manager = VersionManager(str(base), poll_seconds=3600)
    manager.poll_once()
    assert states(manager) == {1: "AVAILABLE"} and manager.resolve(MODEL).version == 1


def test_the_poller_survives_any_error_and_keeps_polling(built: Path, tmp_path: Path, monkeypatch):
    base = tmp_path / "models"
    version(built, base, 1)
    failures = iter([ValueError("something unexpected"), KeyError("x")])
    real = version_manager.versions_on_disk

    def flaky(path: str):
        for failure in failures:
            raise failure
        return real(path)

    manager = VersionManager(str(base), poll_seconds=0.05)
    manager.start()
    try:
        monkeypatch.setattr(version_manager, "versions_on_disk", flaky)
        version(built, base, 2)
        deadline = time.monotonic() + 60
        while states(manager).get(2) != "AVAILABLE":
            assert time.monotonic() < deadline, "the poller stopped polling"
            time.sleep(0.05)
        assert manager.poll_errors == 2
    finally:
        manager.stop()


def test_deleting_the_served_version_keeps_it_answering_until_the_older_one_is_available(
    built: Path, tmp_path: Path
):
    base = tmp_path / "models"
    version(built, base, 1)
    newest = version(built, base, 2)
    manager = VersionManager(str(base), poll_seconds=3600)
    manager.poll_once()
    assert states(manager) == {2: "AVAILABLE"}  # the "latest" policy serves one version
    shutil.rmtree(newest)
    answered, missing, stop = [], [], threading.Event()

    def traffic():
        while not stop.is_set():
            try:
                answered.append(manager.resolve(MODEL).version)
            except ModelNotFoundError:
                missing.append(1)

    client = threading.Thread(target=traffic)
    client.start()
    manager.poll_once()  # loads version 1 while version 2 (deleted from disk) keeps answering
    stop.set()
    client.join()
    assert missing == [] and set(answered) <= {1, 2} and 2 in answered
    assert states(manager) == {1: "AVAILABLE"} and manager.resolve(MODEL).version == 1


def write_config(path: Path, base: Path, versions: list[int], labels: dict[str, int]) -> None:
    policy = " ".join(f"versions: {v}" for v in versions)
    label_text = " ".join(f'version_labels {{ key: "{k}" value: {v} }}' for k, v in labels.items())
    path.write_text(
        f'model_config_list {{ config {{ name: "{MODEL}" base_path: "{base / MODEL}" '
        f'model_platform: "tensorflow" model_version_policy {{ specific {{ {policy} }} }} {label_text} }} }}'
    )


def test_a_changed_models_config_moves_labels_without_a_restart(built: Path, tmp_path: Path):
    base, config = tmp_path / "models", tmp_path / "models.config"
    for number in (1, 2):
        version(built, base, number)
    write_config(config, base, [1, 2], {"stable": 1, "canary": 2})
    manager = VersionManager(config_file=str(config), poll_seconds=3600)
    manager.poll_once()
    assert manager.resolve(MODEL, label="stable").version == 1
    write_config(config, base, [1, 2], {"stable": 2, "canary": 2})
    manager.poll_once()
    assert manager.resolve(MODEL, label="stable").version == 2
    config.write_text("model_config_list { config { name: ")  # broken: the last good one stays
    manager.poll_once()
    assert manager.resolve(MODEL, label="stable").version == 2


def test_a_label_follows_its_new_version_only_once_that_version_is_available(built: Path, tmp_path: Path):
    base, config = tmp_path / "models", tmp_path / "models.config"
    version(built, base, 1)
    write_config(config, base, [1], {"stable": 1})
    manager = VersionManager(config_file=str(config), poll_seconds=3600, load_retry_interval_seconds=3600)
    manager.poll_once()
    broken = version(built, base, 2)
    (broken / "variables" / "variables.index").write_bytes(b"broken")
    write_config(config, base, [1, 2], {"stable": 2})
    manager.poll_once()
    assert states(manager)[2] == "END"
    assert manager.resolve(MODEL, label="stable").version == 1  # still the version that answers


# --- a base path that is missing for a while (issue #20, item 4) ------------------------------------
# TF Serving (tensorflow_serving/sources/storage_path/file_system_storage_path_source.cc): a poll that
# cannot find a base path fails ("Could not find base path ...", lines 253-262) before any aspired
# versions are emitted (lines 441-446), so every loaded version keeps serving; a base path that exists
# but holds no version emits an empty list (lines 313-318, 463) and its versions are unloaded, unless
# `servable_versions_always_present` (lines 450-453), which this server does not offer.
def serve_config(tmp_path: Path, built: Path) -> tuple[VersionManager, Path]:
    base, config = tmp_path / "models", tmp_path / "models.config"
    version(built, base, 1)
    write_config(config, base, [1], {"stable": 1})
    manager = VersionManager(config_file=str(config), poll_seconds=3600)
    manager.poll_once()
    return manager, base


def test_a_model_directory_renamed_away_keeps_its_versions_serving(built: Path, tmp_path: Path):
    manager, base = serve_config(tmp_path, built)
    (base / MODEL).rename(tmp_path / "away")
    for _ in range(3):
        manager.poll_once()
        assert manager.resolve(MODEL).version == 1 and manager.resolve(MODEL, label="stable").version == 1
    assert states(manager) == {1: "AVAILABLE"}
    (tmp_path / "away").rename(base / MODEL)
    version(built, base, 2)
    write_config(tmp_path / "models.config", base, [1, 2], {"stable": 2})
    manager.poll_once()  # back: polling goes on as before
    assert states(manager) == {1: "AVAILABLE", 2: "AVAILABLE"}
    assert manager.resolve(MODEL, label="stable").version == 2


def test_a_config_pointing_at_a_missing_base_path_keeps_the_loaded_versions(built: Path, tmp_path: Path):
    manager, base = serve_config(tmp_path, built)
    write_config(tmp_path / "models.config", tmp_path / "nowhere", [1], {"stable": 1})
    manager.poll_once()
    assert states(manager) == {1: "AVAILABLE"} and manager.resolve(MODEL).version == 1


@pytest.mark.parametrize("moved", ["model directory", "base path"])
def test_with_a_base_path_a_missing_model_directory_or_base_keeps_serving(
    built: Path, tmp_path: Path, moved: str
):
    base = tmp_path / "models"
    version(built, base, 1)
    manager = VersionManager(str(base), poll_seconds=3600)
    manager.poll_once()
    (base / MODEL if moved == "model directory" else base).rename(tmp_path / "away")
    manager.poll_once()
    assert states(manager) == {1: "AVAILABLE"} and manager.resolve(MODEL).version == 1


def test_an_existing_but_empty_base_path_unloads_its_versions_as_tf_serving(built: Path, tmp_path: Path):
    manager, base = serve_config(tmp_path, built)
    shutil.rmtree(base / MODEL / "1")  # the directory is there and readable: nothing is to be served
    manager.poll_once()
    with pytest.raises(ModelNotFoundError):
        manager.resolve(MODEL)


def test_a_missing_base_path_is_logged_once_a_minute_not_at_every_poll(built: Path, tmp_path: Path, caplog):
    manager, base = serve_config(tmp_path, built)
    shutil.rmtree(base)
    with caplog.at_level(logging.WARNING, logger=version_manager.__name__):
        for _ in range(50):
            manager.poll_once()
    lines = [r.getMessage() for r in caplog.records if "Could not find base path" in r.getMessage()]
    assert len(lines) == 1 and str(base / MODEL) in lines[0] and "keeps serving version(s) [1]" in lines[0]
