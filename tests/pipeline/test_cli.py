"""The CLI: every subcommand documents itself, flags override the typed config, bad input exits 2."""

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import EXIT_BAD_INPUT, build_parser, config_from_args, main
from pipeline.config import PipelineConfig


@pytest.mark.parametrize("command", [[], ["data"], ["data", "prepare"], ["run"], ["report"]])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: fmnist" in capsys.readouterr().out


def test_flags_override_defaults_and_derive_paths():
    args = build_parser().parse_args(
        [
            "run",
            "--workdir",
            "/w",
            "--epochs",
            "2",
            "--no-random-flip",
            "--random-shift",
            "0.05",
            "--conv-filters",
            "8",
            "16",
            "--accuracy-floor",
            "0.5",
            "--serving-dir",
            "/srv",
        ]
    )
    config = config_from_args(args)
    assert (
        config.training.epochs == 2
        and config.training.random_flip is False
        and config.training.random_shift == 0.05
    )
    assert config.training.conv_filters == (8, 16)
    assert config.evaluation.accuracy_floor == 0.5
    assert config.data_dir == "/w/data" and config.pipeline_root == "/w/pipeline"
    assert config.model_serving_dir == "/srv/fashion_mnist"
    assert config.training.batch_size == PipelineConfig().training.batch_size


def test_prepare_from_a_directory_without_data_exits_2(tmp_path: Path, capsys):
    code = main(["data", "prepare", "--source-dir", str(tmp_path), "--workdir", str(tmp_path / "w")])
    assert code == EXIT_BAD_INPUT
    assert f"error: {tmp_path}: does not hold the four Fashion-MNIST IDX files" in capsys.readouterr().err


def test_run_without_prepared_data_names_the_directory(tmp_path: Path, capsys):
    code = main(["run", "--workdir", str(tmp_path)])
    assert code == EXIT_BAD_INPUT
    assert f"{tmp_path}/data/train: no TFRecords; run `fmnist data prepare" in capsys.readouterr().err


def test_console_script_is_installed():
    result = subprocess.run(
        [Path(sys.executable).parent / "fmnist", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "data prepare" in result.stdout
