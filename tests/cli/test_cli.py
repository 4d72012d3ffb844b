"""The command line: each command shows only its own flags, flags override the typed config, exit codes."""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli.main import build_parser, main
from cli.pipeline import pipeline_config
from core.config import PipelineConfig
from core.errors import EXIT_BAD_INPUT

ROOT = Path(__file__).resolve().parents[2]


def subcommands(parser: argparse.ArgumentParser, prefix=()) -> list[tuple[str, ...]]:
    """Every leaf command path of the parser (`("data", "prepare")`, `("run",)`, ...)."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += subcommands(sub, (*prefix, name)) or [(*prefix, name)]
    return found


def options(command: tuple[str, ...]) -> dict[str, argparse.Action]:
    parser = build_parser()
    for name in command:
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    return {s: a for a in parser._actions for s in a.option_strings}


@pytest.mark.parametrize("command", subcommands(build_parser()))
def test_every_flag_of_every_command_has_a_help_line(command):
    for flag, action in options(command).items():
        assert action.help and action.help.strip(), f"fmnist {' '.join(command)} {flag} has no help"
        assert "(default: '')" not in action.help, f"{flag} shows an empty default"


@pytest.mark.parametrize("command", subcommands(build_parser()))
def test_every_command_prints_its_help(command, capsys):
    """argparse %-formats help lines: a bare "95 %" in a field's help would break `--help`."""
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([*command, "--help"])
    assert exit_.value.code == 0 and "usage: fmnist" in capsys.readouterr().out


def test_drift_shows_only_its_own_flags():
    flags = set(options(("drift",)))
    assert {"--bins", "--reference", "--model-dir", "--output", "--workdir", "--version"} <= flags
    pipeline_only = {
        "--enable-cache",
        "--beam-runner",
        "--beam-args",
        "--schema-path",
        "--epochs",
        "--data-dir",
    }
    assert not flags & pipeline_only, flags & pipeline_only
    assert "with --reference only" in options(("drift",))["--model-dir"].help


def test_report_and_lineage_take_paths_only():
    for command in (("report",), ("lineage",)):
        flags = set(options(command))
        assert "--workdir" in flags and "--epochs" not in flags and "--beam-args" not in flags


def test_fixed_values_are_choices_and_path_defaults_say_where():
    run = options(("run",))
    assert run["--precision"].choices == ("auto", "bfloat16", "float32")
    assert run["--beam-runner"].choices and "DataflowRunner" in run["--beam-runner"].choices
    assert "(default: <workdir>/data)" in run["--data-dir"].help


def test_main_help_lists_each_command_once_with_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    import re

    assert len(re.findall(r"^ +drift +", text, re.M)) == 1 and "`" not in text
    assert "exit codes:" in text and "3  fmnist drift found drift" in text


def test_flags_override_defaults_and_derive_absolute_paths():
    args = build_parser().parse_args(
        ["run", "--workdir", "/w", "--epochs", "2", "--no-random-flip", "--random-shift", "0.05",
         "--conv-filters", "8", "16", "--accuracy-floor", "0.5", "--serving-dir", "/srv"]
    )  # fmt: skip
    config = pipeline_config(args)
    assert (config.training.epochs, config.training.random_flip, config.training.random_shift) == (
        2,
        False,
        0.05,
    )
    assert config.training.conv_filters == (8, 16)
    assert config.evaluation.accuracy_floor == 0.5
    assert config.data_dir == "/w/data" and config.pipeline_root == "/w/pipeline"
    assert config.model_serving_dir == "/srv/fashion_mnist"
    assert config.training.batch_size == PipelineConfig().training.batch_size
    relative = pipeline_config(build_parser().parse_args(["report", "--workdir", "rel"]))
    assert relative.pipeline_root == os.path.join(os.getcwd(), "rel", "pipeline")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--epochs", "0"], "--epochs: must be >= 1, got 0"),
        (["run", "--batch-size", "-5"], "--batch-size: must be >= 1, got -5"),
        (["run", "--learning-rate", "0"], "--learning-rate: must be > 0.0, got 0.0"),
        (["run", "--validation-fraction", "0.9"], "--validation-fraction: must be <= 0.5, got 0.9"),
        (["run", "--conv-filters", "0"], "--conv-filters: every value must be >= 1"),
        (["run", "--beam-args=--project='unclosed"], "--beam-args: not valid shell quoting"),
        (["drift", "x.npy", "--bins", "0"], "--bins: must be >= 2, got 0"),
        (["serve", "--port", "99999"], "--port: must be <= 65535, got 99999"),
        (["drift", "x.npy", "--model-dir", "/m"], "--model-dir: only used with --reference"),
    ],
)
def test_invalid_configuration_exits_2_before_any_work(argv, message, capsys, tmp_path):
    assert main([*argv, "--workdir", str(tmp_path)]) == EXIT_BAD_INPUT
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing was written


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["data", "prepare", "--limit", "-5"], "--limit: must be >= 1, got -5"),
        (["data", "prepare", "--limit", "0"], "--limit: must be >= 1, got 0"),
        (["predict", "x.png", "--retries", "-1"], "--retries: must be >= 0, got -1"),
        (["predict", "x.png", "--max-images", "-1"], "--max-images: must be >= 1, got -1"),
        (["run", "--precision", "fp8"], "--precision: invalid choice: 'fp8'"),
    ],
)
def test_out_of_range_flags_are_refused_by_the_parser_with_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == EXIT_BAD_INPUT
    assert message in capsys.readouterr().err


def test_prepare_from_a_directory_without_data_exits_2(tmp_path: Path, capsys):
    code = main(["data", "prepare", "--source-dir", str(tmp_path), "--workdir", str(tmp_path / "w")])
    assert code == EXIT_BAD_INPUT
    assert f"error: {tmp_path}: does not hold the four Fashion-MNIST IDX files" in capsys.readouterr().err


def test_prepare_into_a_workdir_that_is_a_file_exits_2_naming_it(tmp_path: Path, capsys):
    (tmp_path / "file").write_text("not a directory")
    code = main(["data", "prepare", "--workdir", str(tmp_path / "file")])
    assert code == EXIT_BAD_INPUT
    assert f"--data-dir {tmp_path / 'file' / 'data'}: cannot write there" in capsys.readouterr().err


READ_ONLY = "/proc/fmnist-test"  # a read-only file system: even root cannot write there


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["drift", "{npy}", "--output", "{file}"], "--output {file}: is a file, not a directory"),
        (["drift", "{npy}", "--output", f"{READ_ONLY}/out"], f"--output {READ_ONLY}/out: cannot write there"),
        (["drift", "{npy}", "--reference", "{npy}", "--model-dir", "{empty}"],
         "--model-dir {empty}: no saved_model.pb"),
        (["drift", "{strings}", "--workdir", "{work}"], "{strings}: pixels of dtype <U1; expected uint8"),
        (["predict", "{strings}"], "{strings}: pixels of dtype <U1; expected uint8"),
        (["serve", "--request-log-dir", "{file}", "--port", "0"], "--request-log-dir {file}: is a file"),
        (["log-proxy", "--request-log-dir", f"{READ_ONLY}/logs"],
         f"--request-log-dir {READ_ONLY}/logs: cannot write there"),
        (["data", "prepare", "--workdir", READ_ONLY], f"--data-dir {READ_ONLY}/data: cannot write there"),
    ],
)  # fmt: skip
def test_unusable_paths_and_arrays_exit_2_naming_them_before_any_work(argv, message, tmp_path: Path, capsys):
    import numpy as np

    paths = {"file": tmp_path / "a-file", "empty": tmp_path / "empty", "npy": tmp_path / "x.npy",
             "strings": tmp_path / "strings.npy", "work": tmp_path / "work"}  # fmt: skip
    paths["file"].write_text("not a directory")
    paths["empty"].mkdir()
    np.save(paths["npy"], np.zeros((4, 28, 28), np.uint8))
    np.save(paths["strings"], np.full((4, 28, 28), "a"))
    before = sorted(tmp_path.rglob("*"))
    assert main([a.format(**paths) for a in argv]) == EXIT_BAD_INPUT
    assert message.format(**paths) in capsys.readouterr().err
    assert sorted(tmp_path.rglob("*")) == before  # nothing written, not even an empty report directory


@pytest.mark.parametrize("command", [["predict"], ["drift", "--no-model", "--workdir", "{work}"]])
def test_predict_and_drift_refuse_the_pictures_data_add_refuses(command, tmp_path: Path, capsys):
    from PIL import Image

    picture = tmp_path / "big.png"
    Image.new("L", (64, 64), 9).save(picture)  # was resized to 28x28 and answered
    before = sorted(tmp_path.rglob("*"))
    argv = [command[0], str(picture), *(a.format(work=tmp_path / "work") for a in command[1:])]
    assert main(argv) == EXIT_BAD_INPUT
    assert f"{picture}: 64x64 pixels; expected 28x28" in capsys.readouterr().err
    assert sorted(tmp_path.rglob("*")) == before


def test_run_without_prepared_data_names_the_directory(tmp_path: Path, capsys):
    code = main(["run", "--workdir", str(tmp_path)])
    assert code == EXIT_BAD_INPUT
    assert f"{tmp_path}/data/test: no TFRecords; run `fmnist data prepare" in capsys.readouterr().err


def test_a_bug_is_not_bad_input_it_shows_its_traceback(monkeypatch):
    import cli.pipeline

    def broken(config):
        raise ValueError("a bug inside a library")

    monkeypatch.setattr(cli.pipeline, "pipeline_config", broken)
    with pytest.raises(ValueError, match="a bug inside a library"):
        main(["report"])


def test_the_installed_command_is_quiet_by_default_and_verbose_on_request(tmp_path: Path):
    fmnist = Path(sys.executable).parent / "fmnist"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    npy = tmp_path / "one.npy"
    import numpy as np

    np.save(npy, np.zeros((1, 28, 28), np.uint8))
    argv = [str(fmnist), "predict", str(npy), "--address", "127.0.0.1:1", "--retries", "0", "--timeout", "1"]
    quiet = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT)
    assert quiet.returncode == 1 and "no TF Serving server answers at 127.0.0.1:1" in quiet.stderr
    noise = ("Unable to register", "cuda", "TensorRT", "oneDNN", "cpu_feature_guard")
    assert not [line for line in quiet.stderr.splitlines() if any(n in line for n in noise)], quiet.stderr
    loud = subprocess.run([*argv, "--verbose"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert any("cuda" in line.lower() for line in loud.stderr.splitlines()), loud.stderr[:2000]


def test_console_script_is_installed():
    result = subprocess.run(
        [Path(sys.executable).parent / "fmnist", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "data" in result.stdout and "exit codes:" in result.stdout


def test_a_failed_run_says_why_once_in_its_report_and_once_in_a_line_on_stderr(
    tmp_path: Path, monkeypatch, capsys
):
    from pipeline import local_runner
    from pipeline.report import ComponentRun, RunReport

    lines = [
        f"against the previous span, feature 'grid_0{i}': Jensen-Shannon divergence 0.9 > 0.3" for i in (1, 2)
    ]
    error = "DataDriftError: span 3 drifted from the data before it:\n  " + "\n  ".join(lines)
    report = RunReport(
        run_id="r", components=[ComponentRun("DriftGate", "FAILED", 0.1)], drift=lines, error=error
    )

    def failing(config, verbose=False):
        raise local_runner.PipelineFailedError(report)

    monkeypatch.setattr(local_runner, "run", failing)
    assert main(["run", "--workdir", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert all(out.count(line) == 1 for line in lines), out  # in the error, not again in a drift section
    assert err.strip().splitlines() == [
        "error: the run failed in DriftGate: DataDriftError: span 3 drifted from the data before it: "
        "(the report above says why in full)"
    ]
