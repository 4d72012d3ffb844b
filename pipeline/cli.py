"""`fmnist`: the project's command line.

    fmnist data prepare   IDX files -> TFRecords of tf.train.Example
    fmnist run            the whole TFX pipeline, then the run report
    fmnist report         the report of the newest run again
    fmnist lineage        which data, schema, code and run produced a pushed model (MLMD)
    fmnist drift          does a batch of images drift from the served model's training data?
    fmnist compile-kubeflow   the same pipeline as a Kubeflow Pipelines v2 / Vertex AI spec
    fmnist serve          a TF Serving gRPC server over the pushed models
    fmnist log-proxy      a request-logging proxy in front of any TF Serving
    fmnist predict        classify images through any TF Serving endpoint
    fmnist status         GetModelStatus of a served model
    fmnist metadata       the signatures of a served model

Every field of `pipeline.config` is a flag of `fmnist run` (`--epochs 3`,
`--no-random-flip`, `--workdir /tmp/x`); the defaults are the dataclasses'.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow)
from pipeline.config import DriftConfig, EvaluationConfig, PipelineConfig, TrainingConfig

EXIT_ERROR = 1
EXIT_BAD_INPUT = 2
EXIT_DRIFT = 3  # `fmnist drift` found drift: distinct from errors, for cron jobs and CI


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


def given_fields(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of dataclass `cls` the user gave a flag for (lists of ints become tuples)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {
        k: (tuple(v) if isinstance(v, list) else v)
        for k, v in vars(args).items()
        if v is not None and k in names
    }


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    """The default configuration with every flag the user gave applied on top."""
    return PipelineConfig(
        **{
            k: v for k, v in given_fields(args, PipelineConfig).items() if k not in ("training", "evaluation")
        },
        training=TrainingConfig(**given_fields(args, TrainingConfig)),
        evaluation=EvaluationConfig(**given_fields(args, EvaluationConfig)),
    )


def _cmd_prepare(args: argparse.Namespace) -> int:
    from components.dataset import prepare_dataset

    config = config_from_args(args)
    manifest = prepare_dataset(
        source_dir=Path(args.source_dir) if args.source_dir else None,
        output_dir=Path(config.data_dir),
        limit=args.limit,
        shards=args.shards,
        force=args.force,
    )
    counts = ", ".join(f"{split}: {info['examples']}" for split, info in manifest["splits"].items())
    verb = "kept the up-to-date" if manifest.get("reused") else "wrote"
    print(f"{verb} TFRecords in {config.data_dir} ({counts}) from {manifest['source_dir']}")
    return 0


def _print_and_save(report: dict, config: PipelineConfig) -> None:
    from pipeline.report import format_report, save_report

    path = save_report(report, config)
    print(format_report(report))
    print(f"report: {path}")


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


def _cmd_lineage(args: argparse.Namespace) -> int:
    from pipeline.lineage import format_lineage, lineage_of

    chain = lineage_of(config_from_args(args), args.version)
    print(json.dumps(chain, indent=2) if args.json else format_lineage(chain))
    return 0


def _cmd_compile_kubeflow(args: argparse.Namespace) -> int:
    from pipeline.kubeflow_runner import IMAGE_SCHEMA_PATH, compile_kubeflow_v2

    if args.schema_path is None:
        args.schema_path = IMAGE_SCHEMA_PATH
    path = compile_kubeflow_v2(config_from_args(args), args.image, args.output)
    print(f"pipeline spec for image {args.image}: {path}")
    return 0


def _cmd_drift(args: argparse.Namespace) -> int:
    import datetime

    from monitoring.batches import load_batch
    from monitoring.drift import check_drift
    from monitoring.drift_report import REPORT_FILE, SUMMARY_FILE, write_report
    from monitoring.reference import data_reference, served_model_reference

    config = config_from_args(args)
    drift = DriftConfig(**given_fields(args, DriftConfig))

    def progress(message: str) -> None:
        print(message, flush=True)

    progress(f"reading {args.input}")
    batch = load_batch(args.input)
    lineage = None
    if args.reference:
        model_dir = None if args.no_model else args.model_dir
        reference, predict = data_reference(args.reference, drift, model_dir, progress)
    else:
        progress("finding the served version's training data through MLMD lineage")
        reference, predict, lineage = served_model_reference(
            config, drift, args.version, not args.no_model, progress
        )
    progress(f"comparing {len(batch.images)} images with {reference.description} (TFDV)")
    result = check_drift(batch, reference, drift, predict)
    stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    paths = write_report(
        result, reference, batch.source, args.output or os.path.join(config.workdir, "drift", stamp), lineage
    )
    if result.drifted:
        moved = ", ".join(
            f"{f.feature} ({f.distance:.3f} > {f.threshold:.3f})" for f in result.drifted_features[:6]
        )
        print(f"DRIFT: {len(result.drifted_features)} of {len(result.features)} features moved: {moved}")
    else:
        print(f"NO DRIFT: all {len(result.features)} features within their thresholds")
    print(f"report: {paths[REPORT_FILE]}\nsummary: {paths[SUMMARY_FILE]}")
    return EXIT_DRIFT if result.drifted else 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from serving.server import ServerConfig, serve

    workdir_serving = PipelineConfig(workdir=args.workdir or "workdir").serving_dir
    serve(
        ServerConfig(
            model_base_path=args.model_base_path or workdir_serving,
            model_config_file=args.model_config_file or "",
            host=args.host,
            port=args.port,
            poll_seconds=args.poll_seconds,
            max_batch=args.max_batch,
            request_log_dir=args.request_log_dir or "",
            request_log_sampling=args.request_log_sampling,
        )
    )
    return 0


def _cmd_log_proxy(args: argparse.Namespace) -> int:
    from serving.log_proxy import run_proxy

    run_proxy(args.upstream, args.request_log_dir, args.host, args.port, args.request_log_sampling)
    return 0


def _client(args: argparse.Namespace):
    from serving.client import ServingClient

    return ServingClient(args.address, timeout=args.timeout, retries=args.retries)


def _cmd_predict(args: argparse.Namespace) -> int:
    from serving.client import load_images

    images = load_images(args.input)[: args.max_images]
    predictions, version = _client(args).predict_images(images, args.model, args.version, args.label)
    for i, p in enumerate(predictions):
        print(f"{args.input}[{i}]: {p.class_name} ({p.probability:.1%})  [version {version}]")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from tensorflow_serving.apis import get_model_status_pb2

    for status in _client(args).status(args.model).model_version_status:
        state = get_model_status_pb2.ModelVersionStatus.State.Name(status.state)
        error = f"  error: {status.status.error_message}" if status.status.error_message else ""
        print(f"{args.model} version {status.version}: {state}{error}")
    return 0


def _cmd_metadata(args: argparse.Namespace) -> int:
    for name, signature in sorted(_client(args).metadata(args.model).signature_def.items()):
        inputs = ", ".join(f"{k} {_dtype_name(v.dtype)}" for k, v in sorted(signature.inputs.items()))
        outputs = ", ".join(f"{k} {_dtype_name(v.dtype)}" for k, v in sorted(signature.outputs.items()))
        print(f"{name}: ({inputs}) -> ({outputs})")
    return 0


def _dtype_name(enum_value: int) -> str:
    import tensorflow as tf

    return tf.dtypes.as_dtype(enum_value).name


def _add_client_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--address", default="127.0.0.1:8500", help="TF Serving gRPC address (default: %(default)s)"
    )
    parser.add_argument("--model", default="fashion_mnist", help="model name (default: %(default)s)")
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds per attempt (default: %(default)s)"
    )
    parser.add_argument(
        "--retries", type=int, default=2, help="retries when unavailable (default: %(default)s)"
    )


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
    prepare.add_argument("--force", action="store_true", help="rewrite TFRecords that are already up to date")
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

    lineage = commands.add_parser(
        "lineage", help="which data, schema, code and run produced a pushed model (from MLMD)"
    )
    _add_dataclass_flags(lineage, PipelineConfig, "paths and pipeline")
    lineage.add_argument("--version", type=int, help="a pushed version (default: the one served now)")
    lineage.add_argument("--json", action="store_true", help="print JSON for machines")
    lineage.set_defaults(handler=_cmd_lineage)

    drift = commands.add_parser(
        "drift", help="does a batch of images drift from the served model's training data? (exit 3: drift)"
    )
    drift.add_argument(
        "input",
        help="request-log directory or file (PredictionLog TFRecords), TFRecords of examples (file or "
        "directory), IDX images file, .npy array, PNG/JPEG or a directory of them",
    )
    drift.add_argument(
        "--version", type=int, help="compare with this pushed version's data (default: served)"
    )
    drift.add_argument("--reference", help="compare with this data instead (any input format above)")
    drift.add_argument("--model-dir", help="with --reference: a SavedModel for the model-output features")
    drift.add_argument("--no-model", action="store_true", help="image features only; no predictions")
    drift.add_argument("--output", help="report directory (default: <workdir>/drift/<time>)")
    _add_dataclass_flags(drift, PipelineConfig, "paths and pipeline")
    _add_dataclass_flags(drift, DriftConfig, "drift measurement")
    drift.set_defaults(handler=_cmd_drift)

    kubeflow = commands.add_parser(
        "compile-kubeflow", help="compile the pipeline to a Kubeflow Pipelines v2 / Vertex AI spec (JSON)"
    )
    _add_dataclass_flags(kubeflow, PipelineConfig, "paths and pipeline (use gs:// URIs)")
    _add_dataclass_flags(kubeflow, TrainingConfig, "training")
    _add_dataclass_flags(kubeflow, EvaluationConfig, "evaluation gate")
    kubeflow.add_argument("--image", required=True, help="the pipeline image built from Dockerfile")
    kubeflow.add_argument("--output", default="fashion_mnist_pipeline.json", help="(default: %(default)s)")
    kubeflow.set_defaults(handler=_cmd_compile_kubeflow)

    serve = commands.add_parser("serve", help="serve the pushed models over TF Serving's gRPC API")
    serve.add_argument("--workdir", help="serve <workdir>/serving (default: workdir)")
    serve.add_argument("--model-base-path", help="TF Serving base path: <base>/<model>/<version>/")
    serve.add_argument(
        "--model-config-file",
        help="TF Serving models.config (text ModelServerConfig): models, version policies, labels; "
        "replaces --model-base-path",
    )
    serve.add_argument("--host", default="127.0.0.1", help="(default: %(default)s; loopback only)")
    serve.add_argument("--port", type=int, default=8500, help="(default: %(default)s, as TF Serving)")
    serve.add_argument("--poll-seconds", type=float, default=2.0, help="how often to look for new versions")
    serve.add_argument("--max-batch", type=int, default=1024, help="largest number of examples per request")
    serve.add_argument("--request-log-dir", help="write sampled PredictionLog TFRecords here (default: off)")
    serve.add_argument("--request-log-sampling", type=float, default=1.0, help="share of requests logged")
    serve.set_defaults(handler=_cmd_serve)

    proxy = commands.add_parser(
        "log-proxy", help="a request-logging gRPC proxy in front of any TF Serving (for `fmnist drift`)"
    )
    proxy.add_argument(
        "--upstream", default="127.0.0.1:8500", help="TF Serving gRPC address (default: %(default)s)"
    )
    proxy.add_argument("--host", default="127.0.0.1", help="(default: %(default)s; loopback only)")
    proxy.add_argument("--port", type=int, default=8600, help="(default: %(default)s)")
    proxy.add_argument("--request-log-dir", required=True, help="write sampled PredictionLog TFRecords here")
    proxy.add_argument("--request-log-sampling", type=float, default=1.0, help="share of requests logged")
    proxy.set_defaults(handler=_cmd_log_proxy)

    predict = commands.add_parser("predict", help="classify a PNG/JPEG, .npy or IDX file")
    predict.add_argument(
        "input", help="image (.png/.jpg), .npy array [n, 28, 28], TFRecords of examples, or IDX images file"
    )
    choice = predict.add_mutually_exclusive_group()
    choice.add_argument("--version", type=int, help="ask for this version (default: the newest served)")
    choice.add_argument(
        "--label", help="ask for the version with this label (from the server's models.config)"
    )
    predict.add_argument("--max-images", type=int, default=1024, help="send at most this many images")
    _add_client_flags(predict)
    predict.set_defaults(handler=_cmd_predict)

    status = commands.add_parser("status", help="GetModelStatus: every version and its state")
    _add_client_flags(status)
    status.set_defaults(handler=_cmd_status)

    metadata = commands.add_parser("metadata", help="GetModelMetadata: the served signatures")
    _add_client_flags(metadata)
    metadata.set_defaults(handler=_cmd_metadata)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # TensorFlow's Python deprecation notices (from TFMA and TFT internals) are not actionable here.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    try:
        return args.handler(args)
    except (ValueError, LookupError, FileNotFoundError) as err:  # LineageError is a LookupError
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RuntimeError as err:  # ServingError: server down or an error answer, already in words
        print(f"error: {err}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
