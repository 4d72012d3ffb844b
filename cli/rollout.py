"""`fmnist promote`, `rollback`, `labels`, `history`: the staged rollout of pushed versions (TF labels).

Every change is recorded, with `--reason`, in the rollout's history
(`release/history.py`), which `fmnist history` shows.
"""

from __future__ import annotations

import argparse
import json
import sys

from cli.flags import add_config_flags, at_least, build_config
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
        else:
            add_reason_flag(command)
        add_config_flags(command, PipelineConfig, SERVING_FIELDS, "paths")
        command.set_defaults(handler=handler)
    history = commands.add_parser(
        "history",
        parents=[common],
        help="show the rollout's history: every push, promote, rollback and applied canary verdict",
        description="Show <serving-dir>/<model>/rollout_history.jsonl, oldest first: when (UTC), who "
        "(user@host), the action, the labels before and after, the reason, and a verdict's decision "
        "(--json: its evidence too). A line cut short by an interrupted write is skipped with a warning.",
    )
    history.add_argument("--json", action="store_true", help="print the entries as JSON lines")
    history.add_argument("--version", type=at_least(0), help="only the entries that involve this version")
    add_config_flags(history, PipelineConfig, SERVING_FIELDS, "paths")
    history.set_defaults(handler=history_command)


def add_reason_flag(command: argparse.ArgumentParser) -> None:
    command.add_argument("--reason", default="", help="why, for the rollout's history (fmnist history)")


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

    rollout = promote(*_where(args), reason=args.reason)
    print(f"promoted: {rollout.describe()}")
    return 0


def rollback_command(args: argparse.Namespace) -> int:
    from release.rollout import rollback

    rollout = rollback(*_where(args), reason=args.reason)
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


def history_command(args: argparse.Namespace) -> int:
    from release.history import entries_for, format_entry, history_path, read_history

    config = build_config(args, PipelineConfig)
    entries = read_history(config.serving_dir, config.model_name)
    if args.version is not None:
        entries = entries_for(entries, args.version)
    if args.json:
        for line in entries:
            print(json.dumps(line, sort_keys=True))
    elif not entries:
        print(f"no history yet in {history_path(config.serving_dir, config.model_name)}")
    for line in [] if args.json else entries:
        print(format_entry(line))
    return 0
