"""`fmnist promote`, `rollback`, `labels`: the staged rollout of pushed versions (TF Serving labels)."""

from __future__ import annotations

import argparse
import json
import sys

from cli.flags import add_config_flags, build_config
from core.config import PipelineConfig
from core.errors import InputError

SERVING_FIELDS = ("workdir", "serving_dir", "model_name")


def register(commands, common: argparse.ArgumentParser) -> None:
    for name, help_text, handler in (
        ("promote", "move the stable label to the canary's version", promote_command),
        ("rollback", "move the stable label back to the previous stable version", rollback_command),
        ("labels", "show which versions are stable, canary, and the way back", labels_command),
    ):
        command = commands.add_parser(
            name,
            parents=[common],
            help=help_text,
            description=f"{help_text[0].upper()}{help_text[1:]}. The state is <serving-dir>/<model>/"
            "rollout.json, published as <serving-dir>/models.config (TF Serving's ModelServerConfig; "
            "servers polling it follow without a restart). A label only moves to a version on disk; "
            "a damaged file or a missing version is refused (exit 2) and nothing is written. Every "
            "rollout command first re-publishes models.config when it does not match rollout.json "
            "(a change killed between writing the two).",
        )
        if name == "labels":
            command.add_argument("--json", action="store_true", help="print JSON for machines")
        add_config_flags(command, PipelineConfig, SERVING_FIELDS, "paths")
        command.set_defaults(handler=handler)


def _where(args: argparse.Namespace) -> tuple[str, str]:
    """The serving directory and model, with `models.config` made to agree with `rollout.json` first."""
    from release.rollout import republish_if_behind

    config = build_config(args, PipelineConfig)
    note = republish_if_behind(config.serving_dir, config.model_name)
    if note:
        print(f"note: {note}", file=sys.stderr)
    return config.serving_dir, config.model_name


def promote_command(args: argparse.Namespace) -> int:
    from release.rollout import promote

    rollout = promote(*_where(args))
    print(f"promoted: {rollout.describe()}")
    return 0


def rollback_command(args: argparse.Namespace) -> int:
    from release.rollout import rollback

    rollout = rollback(*_where(args))
    print(f"rolled back: {rollout.describe()}")
    return 0


def labels_command(args: argparse.Namespace) -> int:
    """Print the state; exit 2 when a version it serves is not on disk (the server cannot load it)."""
    from release.rollout import missing_on_disk, read_rollout

    serving_dir, model = _where(args)
    rollout = read_rollout(serving_dir, model)
    missing = missing_on_disk(serving_dir, model, rollout)
    if args.json:
        print(json.dumps({**rollout.to_json(), "missing": missing}))
    else:
        print(rollout.describe() if rollout.stable is not None else "nothing pushed yet")
    if missing:
        listed = ", ".join(f"{role} {version}" for role, version in missing.items())
        raise InputError(
            f"{model}: not on disk: {listed} (no saved_model.pb under {serving_dir}/{model}/<version>/); "
            "a server cannot load them"
        )
    return 0
