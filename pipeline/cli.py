"""`fmnist`: the project's command line.

    fmnist data prepare   IDX files -> TFRecords of tf.train.Example
    fmnist run            the whole TFX pipeline, then the run report
    fmnist report         the report of the newest run again

Every field of `pipeline.config` is a flag of `fmnist run` (`--epochs 3`,
`--no-augment`, `--workdir /tmp/x`); the defaults are the dataclasses'.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow)
from pipeline.config import EvaluationConfig, PipelineConfig, TrainingConfig

EXIT_ERROR = 1
EXIT_BAD_INPUT = 2


def _add_dataclass_flags(parser: argparse.ArgumentParser, cls: type, title: str) -> None:
    group = parser.add_argument_group(title)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        hint = hints[f.name]
        if hint is bool:
            group.add_argument(
                flag,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"(default: {default})",
            )
        elif typing.get_origin(hint) is tuple:
            group.add_argument(
                flag, dest=f.name, type=int, nargs="+", default=None, help=f"(default: {default})"
            )
        else:
            group.add_argument(flag, dest=f.name, type=hint, default=None, help=f"(default: {default!r})")


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    """The default configuration with every flag the user gave applied on top."""
    given = {k: v for k, v in vars(args).items() if v is not None}

    def pick(cls: type) -> dict[str, Any]:
        names = {f.name for f in dataclasses.fields(cls)}
        return {k: (tuple(v) if isinstance(v, list) else v) for k, v in given.items() if k in names}

    return PipelineConfig(
        **{k: v for k, v in pick(PipelineConfig).items() if k not in ("training", "evaluation")},
        training=TrainingConfig(**pick(TrainingConfig)),
        evaluation=EvaluationConfig(**pick(EvaluationConfig)),
    )


def _cmd_prepare(args: argparse.Namespace) -> int:
    from components.dataset import prepare_dataset

    config = config_from_args(args)
    manifest = prepare_dataset(
        source_dir=Path(args.source_dir) if args.source_dir else None,
        output_dir=Path(config.data_dir),
        limit=args.limit,
        shards=args.shards,
    )
    counts = ", ".join(f"{split}: {info['examples']}" for split, info in manifest["splits"].items())
    print(f"wrote TFRecords to {config.data_dir} ({counts}) from {manifest['source_dir']}")
    return 0


def _print_and_save(report: dict, config: PipelineConfig) -> None:
    from pipeline.report import format_report, save_report

    print(format_report(report))
    print(f"report: {save_report(report, config)}")


def _cmd_run(args: argparse.Namespace) -> int:
    from pipeline.local_runner import PipelineFailedError, run

    config = config_from_args(args)
    try:
        report = run(config, verbose=args.verbose)
    except PipelineFailedError as failure:
        _print_and_save(failure.report, config)
        print(f"error: the pipeline failed: {failure}", file=sys.stderr)
        return EXIT_ERROR
    _print_and_save(report, config)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from pipeline.report import collect_run_report, finish_report, format_report

    print(format_report(finish_report(collect_run_report(config_from_args(args)))))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fmnist", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="prepare the data set").add_subparsers(
        dest="data_command", required=True
    )
    prepare = data.add_parser("prepare", help="verify the official IDX files and write TFRecords")
    prepare.add_argument(
        "--source-dir",
        help="directory with the four IDX files (.gz or not); "
        "default: /usr/share/datasets/fashion-mnist, else download",
    )
    prepare.add_argument(
        "--limit", type=int, help="keep only the first N images of each split (a slice for tests)"
    )
    prepare.add_argument(
        "--shards", type=int, default=4, help="TFRecord files for the train split (default: 4)"
    )
    prepare.add_argument("--workdir", help="(default: workdir)")
    prepare.add_argument("--data-dir", dest="data_dir", help="(default: <workdir>/data)")
    prepare.set_defaults(handler=_cmd_prepare)

    run = commands.add_parser("run", help="run the TFX pipeline with LocalDagRunner")
    _add_dataclass_flags(run, PipelineConfig, "paths and pipeline")
    _add_dataclass_flags(run, TrainingConfig, "training")
    _add_dataclass_flags(run, EvaluationConfig, "evaluation gate")
    run.add_argument("--verbose", action="store_true", help="show TFX's and Beam's full logs")
    run.set_defaults(handler=_cmd_run)

    report = commands.add_parser("report", help="print the report of the newest run")
    _add_dataclass_flags(report, PipelineConfig, "paths and pipeline")
    report.set_defaults(handler=_cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # TensorFlow's Python deprecation notices (from TFMA and TFT internals) are not actionable here.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
