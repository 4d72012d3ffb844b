"""`fmnist drift`: does a batch of images drift from the served model's training data? (exit code 3: yes)

Beside the verdict, the report estimates the model's accuracy on the batch
without labels, with the estimator the compared version was exported with.
"""

from __future__ import annotations

import argparse
import datetime
import os

from cli.flags import add_config_flags, at_least, build_config
from cli.pipeline import SERVED_FIELDS
from core.config import DriftConfig, PipelineConfig
from core.errors import EXIT_DRIFT, ConfigError
from core.paths import output_directory
from core.versions import has_saved_model


def register(commands, common: argparse.ArgumentParser) -> None:
    drift = commands.add_parser(
        "drift",
        parents=[common],
        help="does a batch of images drift from the served model's training data? (exit 3: drift)",
        description="Compare a batch of images with the training data of the served model (found through "
        "ML Metadata lineage), or with --reference data, using TFDV's drift comparators on image "
        "features and the model's answers, and estimate the model's accuracy on the batch without labels "
        "(the logged answers of request logs, else the model's own; with the estimator the version was "
        "exported with, or --model-dir's). Writes an HTML report and a JSON summary.",
    )
    drift.add_argument(
        "input",
        help="request-log directory or file (PredictionLog TFRecords), TFRecords of examples (file or "
        "directory), IDX images file, .npy array, PNG/JPEG or a directory of them",
    )
    drift.add_argument(
        "--version",
        type=at_least(0),
        help="compare with this pushed version's data (default: the served one)",
    )
    drift.add_argument("--reference", help="compare with this data instead (any input format above)")
    drift.add_argument(
        "--model-dir",
        help="with --reference only: a SavedModel version whose answers add the model-output features and "
        "whose accuracy estimator estimates the batch's accuracy",
    )
    drift.add_argument(
        "--no-model", action="store_true", help="image features only; no model answers, no accuracy estimate"
    )
    drift.add_argument(
        "--logged-version",
        help="with request logs: only requests this version answered (a number, or a label such as canary)",
    )
    drift.add_argument(
        "--reference-logged-version",
        help="with request logs as --reference: only requests this version answered (number or label)",
    )
    drift.add_argument("--output", help="report directory (default: <workdir>/drift/<time>)")
    add_config_flags(drift, PipelineConfig, SERVED_FIELDS, "paths")
    add_config_flags(drift, DriftConfig, title="drift measurement")
    drift.set_defaults(handler=drift_command)


def logged_version(config: PipelineConfig, text: str | None) -> int | None:
    """A version number, or the version a rollout label (`stable`, `canary`) names now."""
    if text is None:
        return None
    if text.isascii() and text.isdigit():
        return int(text)
    from release.rollout import read_rollout

    version = read_rollout(config.serving_dir, config.model_name).labels().get(text)
    if version is None:
        raise ConfigError(f"--logged-version {text}: neither a version number nor a current rollout label")
    return version


def drift_command(args: argparse.Namespace) -> int:
    if args.model_dir and not args.reference:
        raise ConfigError(
            "--model-dir: only used with --reference (the served model is found through lineage)"
        )
    if args.model_dir and not has_saved_model(args.model_dir):
        raise ConfigError(
            f"--model-dir {args.model_dir}: no saved_model.pb there (give a SavedModel directory)"
        )
    config = build_config(args, PipelineConfig)
    drift = build_config(args, DriftConfig)
    stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    with output_directory(args.output or os.path.join(config.workdir, "drift", stamp), "--output") as output:
        return _drift(args, config, drift, output)


def _drift(args: argparse.Namespace, config: PipelineConfig, drift: DriftConfig, output: str) -> int:
    """The comparison and its report, into the checked `output` directory."""
    from monitoring.batches import load_batch
    from monitoring.drift import answered, check_drift
    from monitoring.drift_report import REPORT_FILE, SUMMARY_FILE, write_report
    from monitoring.estimated_accuracy import estimate_accuracy, find_estimator
    from monitoring.reference import data_reference, served_model_reference

    def progress(message: str) -> None:
        print(message, flush=True)

    progress(f"reading {args.input}")
    batch = load_batch(args.input, config.model_name, logged_version(config, args.logged_version))
    if batch.skipped:
        progress(f"request-log records left out: {batch.skipped}")
    served_version = None
    if args.reference:
        model_dir = None if args.no_model else args.model_dir
        estimator = find_estimator(model_dir, _why_no_model(args))
        reference_version = logged_version(config, args.reference_logged_version)
        reference, predict = data_reference(
            args.reference, drift, model_dir, progress, config.model_name, reference_version
        )
    else:
        progress("finding the served version's training data through ML Metadata lineage")
        reference, predict, chain = served_model_reference(
            config, drift, args.version, not args.no_model, progress
        )
        served_version = chain.version
        estimator = find_estimator(None if args.no_model else chain.pushed_destination, _why_no_model(args))
    answers = "the logged answers" if batch.probabilities is not None else "the model's answers"
    batch = answered(batch, predict)
    progress(f"comparing {len(batch.images)} images with {reference.description} (TFDV)")
    result = check_drift(batch, reference, drift, predict)
    accuracy = estimate_accuracy(estimator, batch.probabilities, answers, batch.answered_by)
    paths = write_report(result, reference, batch.source, output, accuracy, served_version)
    if result.drifted:
        moved = ", ".join(
            f"{f.feature} ({f.distance:.3f} > {f.threshold:.3f})" for f in result.drifted_features[:6]
        )
        print(f"DRIFT: {len(result.drifted_features)} of {len(result.features)} features moved: {moved}")
    else:
        print(f"NO DRIFT: all {len(result.features)} features within their thresholds")
    print(accuracy.sentence())
    print(f"report: {paths[REPORT_FILE]}\nsummary: {paths[SUMMARY_FILE]}")
    return EXIT_DRIFT if result.drifted else 0


def _why_no_model(args: argparse.Namespace) -> str:
    """Why no accuracy is estimated when no model version is at hand."""
    if args.no_model:
        return "--no-model: the model's answers were not used"
    return "no model version given (--model-dir names the version whose answers and estimator to use)"
