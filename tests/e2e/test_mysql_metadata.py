"""ML Metadata on a real MySQL server (MariaDB from Debian), as a team shares one: a run, the fully
cached rerun, lineage, the drift reference lookup, and the run lock held in the store itself."""

import json
import shutil
from pathlib import Path

import pytest

from cli.main import EXIT_DRIFT, main
from core.config import replace
from pipeline import nodes
from pipeline.local_runner import run
from pipeline.run_guard import PipelineBusyError, exclusive_run
from tests.conftest import tiny_config
from tests.services.mariadb import mariadb

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def store_address(tmp_path_factory: pytest.TempPathFactory):
    with mariadb(tmp_path_factory.mktemp("mariadb")) as address:
        yield address


@pytest.fixture(scope="module")
def mysql_runs(store_address: str, slice_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Span 1 of the slice, run twice with MLMD on MariaDB: trained and pushed, then fully cached."""
    workdir = tmp_path_factory.mktemp("mysql_e2e")
    shutil.copytree(slice_data / "test", workdir / "data" / "test")
    shutil.copytree(slice_data / "span-1", workdir / "data" / "span-1")
    shutil.copy(slice_data / "manifest.json", workdir / "data" / "manifest.json")
    config = replace(tiny_config(workdir, workdir / "data"), metadata_mysql=store_address)
    return {"config": config, "first": run(config), "second": run(config)}


def cli_flags(config) -> list[str]:
    return ["--workdir", config.workdir, "--metadata-mysql", config.metadata_mysql]


def test_a_run_records_in_mysql_and_its_rerun_is_fully_cached(mysql_runs: dict):
    config, first, second = mysql_runs["config"], mysql_runs["first"], mysql_runs["second"]
    assert first.model.pushed and first.states()[nodes.TRAINER] == "COMPLETE"
    assert not Path(config.metadata_path).exists()  # no SQLite store was made
    executed = {name: state for name, state in second.states().items() if name not in nodes.ALWAYS_RUN}
    assert set(executed.values()) == {"CACHED"}, executed  # the cache lives in MySQL


def test_lineage_and_report_read_the_mysql_store(mysql_runs: dict, capsys):
    config, first = mysql_runs["config"], mysql_runs["first"]
    capsys.readouterr()
    assert main(["lineage", "--json", *cli_flags(config)]) == 0
    chain = json.loads(capsys.readouterr().out)
    assert chain["version"] == int(first.model.pushed_version)
    assert [s["span"] for s in chain["spans"]] == [1]
    assert main(["report", *cli_flags(config)]) == 0
    assert "test accuracy" in capsys.readouterr().out


def test_drift_finds_the_reference_through_the_mysql_store(
    mysql_runs: dict, slice_data: Path, tmp_path: Path
):
    config = mysql_runs["config"]
    output = tmp_path / "report"
    code = main(["drift", str(slice_data / "test"), "--output", str(output), *cli_flags(config)])
    assert code in (0, EXIT_DRIFT)
    summary = json.loads((output / "drift_summary.json").read_text())
    assert summary["served_version"] == int(mysql_runs["first"].model.pushed_version)


def test_a_second_machine_on_the_same_store_is_refused_while_a_run_holds_it(mysql_runs: dict, tmp_path: Path):
    config = mysql_runs["config"]
    elsewhere = replace(config, pipeline_root=str(tmp_path / "other-machine"))  # another root, the same store
    with (
        exclusive_run(config),
        pytest.raises(PipelineBusyError, match="holds its lock 'fmnist:fashion_mnist'"),
        exclusive_run(elsewhere),
    ):
        pass
    for _ in range(20):  # free again the moment a run ends, not when the server drops its connection
        with exclusive_run(config):
            pass
        with exclusive_run(elsewhere):
            pass


def test_an_unreachable_mysql_store_is_a_clear_error(mysql_runs: dict, capsys):
    config = mysql_runs["config"]
    code = main(["lineage", "--workdir", config.workdir, "--metadata-mysql", "root@127.0.0.1:1/nowhere"])
    assert code == 1
    assert "ML Metadata at mysql root@127.0.0.1:1/nowhere: cannot be opened" in capsys.readouterr().err
