"""`fmnist data prepare`, `data add`, `data requests`: labelled data in, as spans of TFRecords."""

from __future__ import annotations

import argparse

from cli.flags import add_config_flags, at_least, build_config
from core.config import PipelineConfig
from core.errors import InputError
from core.paths import output_directory, writable_directory
from core.vocabulary import MODEL_NAME
from ingest.labelling import ORDER_CLASS_DOUBT, ORDER_LOGGED, ORDERS

PATH_FIELDS = ("workdir", "data_dir")


def register(commands, common: argparse.ArgumentParser) -> None:
    data = commands.add_parser("data", help="prepare the data set").add_subparsers(
        dest="data_command", required=True, metavar="COMMAND", title="commands"
    )
    prepare = data.add_parser(
        "prepare",
        parents=[common],
        help="verify the official IDX files and write TFRecords",
        description="Find the four official IDX files, check their SHA-256, and write GZIP TFRecords of "
        "tf.train.Example (image: 784 int64 pixels, label: int64): the training split as spans "
        "<data-dir>/span-1/ .. span-K/, the test split as the gold evaluation set <data-dir>/test/. "
        "Up-to-date TFRecords are kept.",
    )
    prepare.add_argument(
        "--source-dir",
        help="directory with the four IDX files (.gz or not) "
        "(default: /usr/share/datasets/fashion-mnist, else the official mirror)",
    )
    prepare.add_argument(
        "--limit", type=at_least(1), help="keep only the first N images of each split (a slice for tests)"
    )
    prepare.add_argument(
        "--spans",
        type=at_least(1),
        default=1,
        help="cut the training split into this many spans, as if it arrived over as many days (default: 1)",
    )
    prepare.add_argument("--shards", type=at_least(1), default=4, help="TFRecord files per span (default: 4)")
    prepare.add_argument("--force", action="store_true", help="rewrite TFRecords that are already up to date")
    add_config_flags(prepare, PipelineConfig, PATH_FIELDS, "paths")
    prepare.set_defaults(handler=prepare_command)

    add = data.add_parser(
        "add",
        parents=[common],
        help="write the next span from new labelled images",
        description="Write labelled images as the next span <data-dir>/span-N/ (checked, checksummed; a bad "
        "input writes nothing). INPUT is a folder of class subfolders (named 0-9 or by class name, "
        "e.g. T-shirt_top) of PNG/JPEG files; or an IDX images file, or a .npy array of images, with "
        "--labels; or request logs of the served model with --labels, a CSV of request_id,label. "
        "Pictures are taken as they are, never converted in a way that changes a pixel: each must be "
        "28x28 and 8-bit grey; RGB, RGBA and palette pictures are read only when every pixel is grey "
        "(equal channels) and fully opaque. Any other size, 16-bit samples, colour, transparency or "
        "several frames is refused (exit 2, naming the file and what is wrong). Examples an earlier span "
        "holds already (the same input added twice, in any order) are refused (exit 2, naming that span) "
        "unless --allow-duplicate; from request logs, labelled images an earlier span took are left out, "
        "so the same labels.csv can be added again as people label more of it.",
    )
    add.add_argument(
        "input", help="class-folder tree, IDX images, .npy images, or request logs (dir or file)"
    )
    add.add_argument(
        "--labels",
        help="labels for IDX/.npy images (IDX labels, .npy integers, or one label per line) or for request "
        "logs (CSV request_id,label); labels are class indices 0-9 or class names",
    )
    add.add_argument(
        "--model",
        default=MODEL_NAME,
        help="with request logs: the model whose requests to read (default: %(default)s)",
    )
    add.add_argument("--shards", type=at_least(1), default=4, help="TFRecord files for the span (default: 4)")
    add.add_argument(
        "--allow-duplicate",
        action="store_true",
        help="add even when an earlier span holds the same examples (the same input again), and, with "
        "request logs, labelled images an earlier span took (default: refused, exit 2, naming the span)",
    )
    add_config_flags(add, PipelineConfig, PATH_FIELDS, "paths")
    add.set_defaults(handler=add_command)

    requests = data.add_parser(
        "requests",
        parents=[common],
        help="export logged request images for labelling (PNG files and a CSV to fill in)",
        description="Write each image of the request logs as <output>/<n>.png and a row of "
        "<output>/labels.csv (request_id,file,label with the label empty); fill in the labels, then "
        "`fmnist data add LOGS --labels labels.csv`. Safe to re-run while people label: an existing "
        "labels.csv is never overwritten but merged: its rows stay exactly as they are (labels, order, "
        "added columns), images it lists are not exported again, and only images new in the logs are "
        "appended as new PNGs and rows. A labels.csv without the columns request_id,file,label is "
        "refused (exit 2) and left alone. Log records that cannot be read (cut short, or declaring "
        "more values than they carry) are skipped and counted. New images are appended --order: as logged "
        "(a fair sample of the traffic), least confident first, or class-doubt (the answers the "
        "answering version's per-class accuracy estimate doubts most first). A ranked export puts the "
        "model's likely mistakes on top: a span labelled from the top is harder than the traffic and "
        "the served model agrees with it less.",
    )
    requests.add_argument("logs", help="request-log directory or file (PredictionLog TFRecords)")
    requests.add_argument("--output", required=True, help="directory for the PNG files and labels.csv")
    requests.add_argument(
        "--model", default=MODEL_NAME, help="the model whose requests to export (default: %(default)s)"
    )
    requests.add_argument(
        "--order",
        choices=ORDERS,
        default=ORDER_LOGGED,
        help="order of the new rows: logged (as the logs hold them), least-confident (lowest top "
        "probability of the logged answer first), class-doubt (each answer's chance of being right by "
        "the per-class accuracy estimate, scaled to its class's lower 90%% bound, lowest first; reads "
        "each answering version's estimator under --serving-dir) (default: %(default)s)",
    )
    add_config_flags(requests, PipelineConfig, ("workdir", "serving_dir"), "paths")
    requests.set_defaults(handler=requests_command)


def prepare_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ingest.prepare import prepare_dataset

    config = build_config(args, PipelineConfig)
    writable_directory(config.data_dir, "--data-dir")
    manifest = prepare_dataset(
        source_dir=Path(args.source_dir) if args.source_dir else None,
        output_dir=Path(config.data_dir),
        limit=args.limit,
        shards=args.shards,
        spans=args.spans,
        force=args.force,
    )
    counts = ", ".join(f"{split}: {info['examples']}" for split, info in manifest["splits"].items())
    verb = "kept the up-to-date" if manifest.get("reused") else "wrote"
    print(f"{verb} TFRecords in {config.data_dir} ({counts}) from {manifest['source_dir']}")
    return 0


def _labelled(args: argparse.Namespace, data_dir: str):
    """Images and labels from whatever `args.input` is (see `ingest.sources`), as `ingest.sources.Labelled`.

    From request logs, images an earlier span of `data_dir` took are left out
    (unless --allow-duplicate), so a growing sheet of labels adds only its new rows.
    """
    import os

    from core.image_files import is_picture
    from ingest.sources import Labelled, from_class_folders, from_files, from_request_logs, log_files
    from ingest.spans import request_ids_in_spans
    from serving.request_log import is_request_log

    path = args.input
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file or directory")
    logs = [f for f in log_files(path) if f.endswith(".tfrecord") and is_request_log(f)]
    if logs:
        if not args.labels:
            raise InputError(f"{path}: request logs need --labels, a CSV of request_id,label")
        added = {} if args.allow_duplicate else request_ids_in_spans(data_dir)
        return from_request_logs(path, args.labels, args.model, added)
    if os.path.isdir(path):
        if args.labels:
            raise InputError(f"--labels: not used with a folder of class subfolders ({path})")
        return Labelled(*from_class_folders(path), f"class folders under {path}")
    if not args.labels:
        kind = "image" if is_picture(path) else "images file"
        raise InputError(f"{path}: an {kind} needs --labels (or use a folder of class subfolders)")
    return Labelled(*from_files(path, args.labels), f"{path} labelled by {args.labels}")


def add_command(args: argparse.Namespace) -> int:
    from ingest.spans import write_span

    config = build_config(args, PipelineConfig)
    with output_directory(config.data_dir, "--data-dir"):  # a refused input leaves no empty directory
        labelled = _labelled(args, config.data_dir)
        if labelled.note:
            print(labelled.note)
        manifest = write_span(
            config.data_dir,
            labelled.images,
            labelled.labels,
            labelled.source,
            shards=args.shards,
            request_ids=labelled.request_ids,
            allow_duplicate=args.allow_duplicate,
        )
    counts = ", ".join(f"{n}" for n in manifest.class_counts)
    print(
        f"wrote span {manifest.span} to {config.data_dir}: {manifest.examples} images (per class: {counts})"
    )
    return 0


def requests_command(args: argparse.Namespace) -> int:
    import os

    from ingest.labelling import export_for_labelling

    config = build_config(args, PipelineConfig)

    def model_dir_of(version: int) -> str:
        return os.path.join(config.serving_dir, args.model, str(version))

    ranked_by_estimate = args.order == ORDER_CLASS_DOUBT
    with output_directory(args.output, "--output") as output:  # a refused export leaves no empty directory
        export = export_for_labelling(
            args.logs, output, args.model, args.order, model_dir_of if ranked_by_estimate else None
        )
    print(export.summary())
    return 0
