"""`fmnist promote`, `rollback`, `labels`: the staged rollout of pushed versions (TF Serving labels)."""

from __future__ import annotations

import argparse
import json

from cli.flags import add_config_flags, build_config
from core.config import PipelineConfig

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
            description=f"{help_text[0].upper()}{help_text[1:]}, by rewriting <serving-dir>/models.config "
            "(TF Serving's ModelServerConfig; servers polling it follow without a restart).",
        )
        if name == "labels":
            command.add_argument("--json", action="store_true", help="print JSON for machines")
        add_config_flags(command, PipelineConfig, SERVING_FIELDS, "paths")
        command.set_defaults(handler=handler)


def _where(args: argparse.Namespace) -> tuple[str, str]:
    config = build_config(args, PipelineConfig)
    return config.serving_dir, config.model_name


def promote_command(args: argparse.Namespace) -> int:
    from serving.rollout import promote

    rollout = promote(*_where(args))
    print(f"promoted: {rollout.describe()}")
    return 0


def rollback_command(args: argparse.Namespace) -> int:
    from serving.rollout import rollback

    rollout = rollback(*_where(args))
    print(f"rolled back: {rollout.describe()}")
    return 0


def labels_command(args: argparse.Namespace) -> int:
    from serving.rollout import read_rollout

    rollout = read_rollout(*_where(args))
    if args.json:
        print(
            json.dumps({"stable": rollout.stable, "canary": rollout.canary, "history": list(rollout.history)})
        )
    else:
        print(rollout.describe() if rollout.stable is not None else "nothing pushed yet")
    return 0
