"""`fmnist run`, `report`, `lineage`, `compile-kubeflow`: the pipeline and what ML Metadata knows of it."""

from __future__ import annotations

import argparse
import json

from cli.flags import add_config_flags, at_least, build_config
from core.config import EvaluationConfig, PipelineConfig, TrainingConfig

STORE_FIELDS = ("workdir", "pipeline_root", "pipeline_name", "metadata_mysql")
SERVED_FIELDS = (*STORE_FIELDS, "serving_dir", "model_name")


def pipeline_config(args: argparse.Namespace) -> PipelineConfig:
    """The pipeline configuration: defaults, then the flags given (sections where the command has them)."""
    sections = {}
    if hasattr(args, "epochs"):
        sections["training"] = build_config(args, TrainingConfig)
        sections["evaluation"] = build_config(args, EvaluationConfig)
    return build_config(args, PipelineConfig, **sections)


def _add_pipeline_flags(parser: argparse.ArgumentParser) -> None:
    add_config_flags(parser, PipelineConfig, title="paths and pipeline")
    add_config_flags(parser, TrainingConfig, title="training")
    add_config_flags(parser, EvaluationConfig, title="evaluation gate")


def register(commands, common: argparse.ArgumentParser) -> None:
    run = commands.add_parser(
        "run",
        parents=[common],
        help="run the TFX pipeline with LocalDagRunner, then print the run report",
        description="Run the whole pipeline on the prepared data with TFX's LocalDagRunner; print the run "
        "report and save it (JSON, confusion-matrix PNG) under <pipeline-root>/reports/.",
    )
    _add_pipeline_flags(run)
    run.set_defaults(handler=run_command)

    report = commands.add_parser(
        "report", parents=[common], help="print the report of the newest run again, as the run printed it"
    )
    add_config_flags(report, PipelineConfig, STORE_FIELDS, "paths")
    report.set_defaults(handler=report_command)

    lineage = commands.add_parser(
        "lineage",
        parents=[common],
        help="which data, schema, code and run produced a pushed model (from ML Metadata)",
    )
    lineage.add_argument("--version", type=at_least(0), help="a pushed version (default: the one served now)")
    lineage.add_argument("--json", action="store_true", help="print JSON for machines")
    add_config_flags(lineage, PipelineConfig, SERVED_FIELDS, "paths")
    lineage.set_defaults(handler=lineage_command)

    kubeflow = commands.add_parser(
        "compile-kubeflow",
        parents=[common],
        help="compile the pipeline to a Kubeflow Pipelines v2 / Vertex AI spec (JSON)",
        description="Compile the same pipeline with TFX's KubeflowV2DagRunner. Use gs:// URIs for the paths.",
    )
    kubeflow.add_argument("--image", required=True, help="the pipeline image built from Dockerfile")
    kubeflow.add_argument(
        "--output", default="fashion_mnist_pipeline.json", help="the spec file (default: %(default)s)"
    )
    _add_pipeline_flags(kubeflow)
    kubeflow.set_defaults(handler=compile_kubeflow_command)


def run_command(args: argparse.Namespace) -> int:
    from pipeline.local_runner import PipelineFailedError, run
    from pipeline.report import format_report, save_report

    config = pipeline_config(args)
    try:
        report = run(config, verbose=args.verbose)
    except PipelineFailedError as failure:
        saved, path = save_report(failure.report, config)
        print(format_report(saved))
        print(f"report: {path}")
        raise
    saved, path = save_report(report, config)
    print(format_report(saved))
    print(f"report: {path}")
    return 0


def report_command(args: argparse.Namespace) -> int:
    from pipeline.report import format_report, latest_report

    print(format_report(latest_report(pipeline_config(args))))
    return 0


def lineage_command(args: argparse.Namespace) -> int:
    from pipeline.lineage import format_lineage, lineage_of

    chain = lineage_of(pipeline_config(args), args.version)
    print(json.dumps(chain.to_json(), indent=2) if args.json else format_lineage(chain))
    return 0


def compile_kubeflow_command(args: argparse.Namespace) -> int:
    from pipeline.kubeflow_runner import IMAGE_SCHEMA_PATH, compile_kubeflow_v2

    if args.schema_path is None:
        args.schema_path = IMAGE_SCHEMA_PATH
    path = compile_kubeflow_v2(pipeline_config(args), args.image, args.output)
    print(f"pipeline spec for image {args.image}: {path}")
    return 0
