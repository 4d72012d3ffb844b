"""`fmnist`: the project's command line. Each group of subcommands lives in its own module here.

The process is quiet by default: TensorFlow's C++ start-up lines (CUDA probing
on a machine without a GPU, printed at ERROR level) are hidden in this process
and in the Beam workers it starts; `--verbose` shows them and TFX's full log.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Sequence

from cli import canary, data, drift, pipeline, rollout, serving
from core.errors import (
    EXIT_BAD_INPUT,
    EXIT_DRIFT,
    EXIT_FAILED,
    EXIT_HOLD,
    EXIT_OK,
    EXIT_ROLL_BACK,
    ProjectError,
)

DESCRIPTION = "Fashion-MNIST on TFX: prepare data, run the pipeline, serve and watch the model."
EXIT_CODES = f"""exit codes:
  {EXIT_OK}  success
  {EXIT_FAILED}  the pipeline failed or another run holds its root; a server could not be reached
  {EXIT_BAD_INPUT}  bad input: a missing or malformed file, an invalid flag, an unknown version
  {EXIT_DRIFT}  fmnist drift found drift
  {EXIT_HOLD} fmnist canary: hold (not enough traffic yet, or canary and stable saw different inputs)
  {EXIT_ROLL_BACK} fmnist canary: roll back (fmnist canary exits {EXIT_OK} to promote)

Every command has --help."""


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--verbose", action="store_true", help="show TensorFlow's C++ log lines and TFX's full log"
    )
    parser = argparse.ArgumentParser(
        prog="fmnist",
        description=DESCRIPTION,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    for group in (data, pipeline, rollout, canary, drift, serving):
        group.register(commands, common)
    return parser


# Python warnings third-party code raises about its own dependencies, which no user of this command can act
# on: TFX 1.16's proto_utils calls protobuf's deprecated MessageFactory on every component's properties.
THIRD_PARTY_WARNINGS = ((r"MessageFactory class is deprecated", UserWarning),)


def quiet_tensorflow(verbose: bool) -> None:
    """Hide TensorFlow's C++ log below FATAL (inherited by Beam workers) unless `verbose`.

    Level 2 is not enough: the "Unable to register cuDNN/cuFFT/cuBLAS factory"
    lines are printed at ERROR level (tensorflow/tensorflow#62075). A value the
    user set in the environment wins.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "3")
    if not verbose:
        # Deprecation notices from TFMA's and TFT's own use of TensorFlow are not actionable here.
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
        for message, category in THIRD_PARTY_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_tensorflow(args.verbose)
    try:
        return args.handler(args)
    except ProjectError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
