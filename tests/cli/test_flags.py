"""Every field of the typed configuration a command uses has its flag there, built from the configuration."""

import argparse
import dataclasses
import typing

import pytest

from cli.main import build_parser
from core.config import CanaryConfig, DriftConfig, PipelineConfig, RetentionConfig, ServingConfig, flag_name

# The configuration sections each command reads in full (a command that reads a few fields by name, such as
# `report` or `promote`, declares them in its module and is checked by the parser tests in test_cli.py).
USES = {
    "run": (PipelineConfig,),
    "compile-kubeflow": (PipelineConfig,),
    "serve": (ServingConfig,),
    "drift": (DriftConfig,),
    "canary": (CanaryConfig, DriftConfig),
    "retention": (RetentionConfig,),
}
NOT_USED = {"retention": {"apply_retention"}}  # the command applies the policy: there is nothing to switch


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = sub
                found.update({f"{name} {n}": s for n, s in subcommands(sub).items()})
    return found


def fields_of(cls: type) -> list[str]:
    """Every plain field of a configuration class, its nested sections' fields included."""
    hints = typing.get_type_hints(cls)
    names = []
    for f in dataclasses.fields(cls):
        nested = hints[f.name]
        names.extend(fields_of(nested) if dataclasses.is_dataclass(nested) else [f.name])
    return names


@pytest.mark.parametrize("command", sorted(USES))
def test_every_configuration_field_a_command_uses_has_its_flag(command: str):
    parser = subcommands(build_parser())[command]
    flags = {option for action in parser._actions for option in action.option_strings}
    used = [name for cls in USES[command] for name in fields_of(cls) if name not in NOT_USED.get(command, ())]
    missing = [name for name in used if flag_name(name) not in flags]
    assert not missing, f"fmnist {command} has no flag for {missing}"


def test_run_takes_the_spans_and_data_gate_settings_as_flags(tmp_path):
    from cli.pipeline import pipeline_config

    argv = ["run", "--workdir", str(tmp_path), "--window-spans", "4", "--window-images", "20000",
            "--on-drift", "warn", "--drift-jsd-threshold", "0.2", "--label-linf-threshold", "0.1",
            "--min-relative-label-agreement", "0.5", "--epochs", "3"]  # fmt: skip
    config = pipeline_config(build_parser().parse_args(argv))
    assert dataclasses.asdict(config.spans) == {
        "window_spans": 4, "window_images": 20000, "on_drift": "warn", "drift_jsd_threshold": 0.2,
        "min_relative_label_agreement": 0.5, "label_linf_threshold": 0.1,
    }  # fmt: skip
    assert config.training.epochs == 3


def test_a_new_field_without_a_flag_fails_this_check(monkeypatch: pytest.MonkeyPatch):
    """The check above can fail: a field added to a section but not given a flag is found."""

    @dataclasses.dataclass(frozen=True)
    class WithExtra(DriftConfig):
        brand_new_knob: int = 1

    monkeypatch.setitem(USES, "drift", (WithExtra,))
    with pytest.raises(AssertionError, match="fmnist drift has no flag for \\['brand_new_knob'\\]"):
        test_every_configuration_field_a_command_uses_has_its_flag("drift")
