"""`fmnist run`, `report`, `lineage`, `model-card`, `compile-kubeflow`: the pipeline and what MLMD knows."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

from cli.flags import add_config_flags, at_least, build_config
from core.config import EvaluationConfig, PipelineConfig, RetentionConfig, SpansConfig, TrainingConfig
from core.errors import PipelineError

STORE_FIELDS = ("workdir", "pipeline_root", "pipeline_name", "metadata_mysql")
SERVED_FIELDS = (*STORE_FIELDS, "serving_dir", "model_name")


def pipeline_config(args: argparse.Namespace) -> PipelineConfig:
    """The pipeline configuration: defaults, then the flags given (sections where the command has them)."""
    sections = {
        name: build_config(args, cls)
        for name, (cls, _) in PIPELINE_SECTIONS.items()
        if any(hasattr(args, f.name) for f in dataclasses.fields(cls))
    }
    return build_config(args, PipelineConfig, **sections)


# The nested sections of PipelineConfig a pipeline command takes flags for, with their group titles.
PIPELINE_SECTIONS = {
    "training": (TrainingConfig, "training"),
    "evaluation": (EvaluationConfig, "evaluation gate"),
    "spans": (SpansConfig, "spans and data gates (the training window, drift and label gates)"),
    "retention": (RetentionConfig, "retention (what a run keeps of earlier outputs)"),
}


def _add_pipeline_flags(parser: argparse.ArgumentParser) -> None:
    add_config_flags(parser, PipelineConfig, title="paths and pipeline")
    for cls, title in PIPELINE_SECTIONS.values():
        add_config_flags(parser, cls, title=title)


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

    card = commands.add_parser(
        "model-card",
        parents=[common],
        help="write a model card (HTML and Markdown) for a pushed version, for a reviewer before promoting",
        description="Write model_card.html, model_card.md, per_class.png and model_card.json for a pushed "
        "version, from ML Metadata and the Evaluator's output: the spans and images it trained on, warm "
        "start, gold accuracy overall and per class with 90 % intervals, calibration, the gates it "
        "passed, its weakest classes and most confused pairs, its serving signatures, its rollout history.",
    )
    card.add_argument("--version", type=at_least(0), help="a pushed version (default: the stable one)")
    card.add_argument(
        "--output", help="directory for the card (default: <workdir>/model_cards/<model>-<version>)"
    )
    add_config_flags(card, PipelineConfig, SERVED_FIELDS, "paths")
    card.set_defaults(handler=model_card_command)

    retention = commands.add_parser(
        "retention",
        parents=[common],
        help="delete the outputs the retention policy no longer keeps (--dry-run lists them)",
        description="Apply the retention policy now, as every run does after it finishes: keep the newest "
        "runs' outputs, whatever the served versions and the training window need, and their lineage; "
        "delete the rest and mark it DELETED in ML Metadata.",
    )
    retention.add_argument(
        "--dry-run", action="store_true", help="list what would go and its size; delete nothing"
    )
    add_config_flags(retention, PipelineConfig, SERVED_FIELDS, "paths")
    add_config_flags(
        retention, SpansConfig, ("window_spans", "window_images"), "the training window it keeps"
    )
    policy = [f.name for f in dataclasses.fields(RetentionConfig) if f.name != "apply_retention"]
    add_config_flags(retention, RetentionConfig, policy, "retention policy")
    retention.set_defaults(handler=retention_command)

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
    kubeflow.add_argument(
        "--allow-reduced-spec",
        action="store_true",
        help="write the spec even if it lacks a node or an input of the pipeline (printed); refused "
        "by default, since a gate without its inputs would pass everything",
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
        raise PipelineError(failure.summary()) from None  # the report above holds the whole message
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


def model_card_command(args: argparse.Namespace) -> int:
    from core.paths import output_directory
    from pipeline.model_card import collect_model_card
    from pipeline.model_card_page import HTML_FILE, MARKDOWN_FILE, write_model_card

    config = pipeline_config(args)
    card = collect_model_card(config, args.version)  # bad input is refused before anything is written
    default = os.path.join(config.workdir, "model_cards", f"{config.model_name}-{card.version}")
    with output_directory(args.output or default, "--output") as output:
        paths = write_model_card(card, output)
    print(f"model card of version {card.version}: {paths[HTML_FILE]}\nmarkdown: {paths[MARKDOWN_FILE]}")
    return 0


def retention_command(args: argparse.Namespace) -> int:
    from pipeline.retention import apply_retention, plan_retention
    from pipeline.run_guard import exclusive_run

    config = pipeline_config(args)
    if args.dry_run:
        plan = plan_retention(config)
        for removal in plan.removals:
            print(f"would remove {removal.what}: {removal.path} ({removal.size / 2**20:.2f} MB)")
        print(f"would free {plan.bytes / 2**20:.1f} MB; kept versions {list(plan.kept_versions)}")
        return 0
    with exclusive_run(config):  # never while a run writes the same pipeline root
        print(apply_retention(config).describe())
    return 0


def compile_kubeflow_command(args: argparse.Namespace) -> int:
    from pipeline.kubeflow_runner import IMAGE_SCHEMA_PATH, compile_kubeflow_v2

    if args.schema_path is None:
        args.schema_path = IMAGE_SCHEMA_PATH
    path, missing = compile_kubeflow_v2(
        pipeline_config(args), args.image, args.output, allow_reduced=args.allow_reduced_spec
    )
    print(f"pipeline spec for image {args.image}: {path}")
    for part in missing:
        print(f"  REDUCED: the spec lacks {part}")
    return 0
