"""`fmnist serve`, `log-proxy`, `predict`, `status`, `metadata`: TF Serving's protocol, both ends."""

from __future__ import annotations

import argparse

from cli.flags import add_config_flags, at_least, build_config, positive_float
from core import storage
from core.config import PipelineConfig, ServingConfig
from core.paths import writable_directory
from core.vocabulary import MODEL_NAME

SERVE_FIELDS = (
    "model_base_path",
    "model_config_file",
    "host",
    "port",
    "rest_api_port",
    "rest_api_enable_cors_support",
    "poll_seconds",
    "max_batch",
    "max_message_mb",
    "workers",
    "enable_batching",
    "batching_parameters_file",
    "monitoring_config_file",
    "request_log_dir",
    "request_log_sampling",
    "request_log_max_mb",
    "request_log_max_days",
    "canary_percent",
    "estimate_window",
)
PROXY_FIELDS = (
    "host", "port", "rest_api_port", "rest_api_enable_cors_support", "max_message_mb", "workers",
    "monitoring_config_file", "request_log_sampling", "request_log_max_mb", "request_log_max_days",
    "poll_seconds", "canary_percent",
)  # fmt: skip


def register(commands, common: argparse.ArgumentParser) -> None:
    serve = commands.add_parser(
        "serve",
        parents=[common],
        help="serve the pushed models over TF Serving's gRPC and REST APIs",
        description="A TF Serving-protocol server over the pushed models: by default the pipeline's "
        "<serving-dir>/models.config (versions and labels of the staged rollout, re-read when it "
        "changes), else every model under <serving-dir>. New versions load while the old ones keep "
        "answering; stops gracefully on SIGTERM.",
    )
    add_config_flags(serve, PipelineConfig, ("workdir", "serving_dir"), "paths")
    add_config_flags(serve, ServingConfig, SERVE_FIELDS, "server")
    serve.set_defaults(handler=serve_command)

    proxy = commands.add_parser(
        "log-proxy",
        parents=[common],
        help="a request-logging proxy (gRPC and REST) in front of any TF Serving (for fmnist drift)",
    )
    proxy.add_argument(
        "--upstream", default="127.0.0.1:8500", help="TF Serving gRPC address (default: %(default)s)"
    )
    proxy.add_argument("--request-log-dir", required=True, help="write sampled PredictionLog TFRecords here")
    proxy.add_argument(
        "--model-config-file",
        "--model_config_file",
        dest="model_config_file",
        help="the models.config the upstream TF Serving reads: its 'stable' and 'canary' labels route the "
        "traffic split (--canary-percent), re-read every --poll-seconds (default: none, no split)",
    )
    add_config_flags(
        proxy, ServingConfig, PROXY_FIELDS, "proxy", defaults={"port": 8600, "rest_api_port": 8601}
    )
    proxy.set_defaults(handler=log_proxy_command)
    predict = commands.add_parser(
        "predict", parents=[common], help="classify images through any TF Serving endpoint"
    )
    predict.add_argument(
        "input",
        help="image (.png/.jpg), .npy array [n, 28, 28] of pixels 0..255, TFRecords of examples, "
        "or an IDX images file",
    )
    choice = predict.add_mutually_exclusive_group()
    choice.add_argument(
        "--version", type=at_least(0), help="ask for this version (default: the newest served)"
    )
    choice.add_argument(
        "--label", help="ask for the version with this label (from the server's models.config)"
    )
    predict.add_argument(
        "--max-images", type=at_least(1), default=1024, help="send at most this many images (default: 1024)"
    )
    _add_client_flags(predict)
    predict.set_defaults(handler=predict_command)

    status = commands.add_parser(
        "status", parents=[common], help="GetModelStatus: every version and its state"
    )
    _add_client_flags(status)
    status.set_defaults(handler=status_command)

    metadata = commands.add_parser(
        "metadata", parents=[common], help="GetModelMetadata: the served signatures"
    )
    _add_client_flags(metadata)
    metadata.set_defaults(handler=metadata_command)


def _add_client_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("server")
    group.add_argument(
        "--address", default="127.0.0.1:8500", help="TF Serving gRPC address (default: %(default)s)"
    )
    group.add_argument("--model", default=MODEL_NAME, help="model name (default: %(default)s)")
    group.add_argument(
        "--timeout", type=positive_float, default=10.0, help="seconds per attempt (default: %(default)s)"
    )
    group.add_argument(
        "--retries",
        type=at_least(0),
        default=2,
        help="retries when the server is unavailable (default: %(default)s)",
    )


def serve_command(args: argparse.Namespace) -> int:
    from release.rollout import models_config_path
    from serving.server import serve

    config = build_config(args, ServingConfig)
    if config.request_log_dir:
        writable_directory(config.request_log_dir, "--request-log-dir")
    if not config.model_base_path and not config.model_config_file:
        serving_dir = build_config(args, PipelineConfig).serving_dir
        rollout_config = models_config_path(serving_dir)
        if storage.exists(rollout_config):  # the pipeline's staged rollout: labels stable and canary
            config = build_config(args, ServingConfig, model_config_file=rollout_config)
        else:
            config = build_config(args, ServingConfig, model_base_path=serving_dir)
    serve(config)
    return 0


def log_proxy_command(args: argparse.Namespace) -> int:
    from serving.log_proxy import run_proxy

    writable_directory(args.request_log_dir, "--request-log-dir")
    run_proxy(args.upstream, args.request_log_dir, build_config(args, ServingConfig))
    return 0


def _client(args: argparse.Namespace):
    from serving.client import ServingClient

    return ServingClient(args.address, timeout=args.timeout, retries=args.retries)


def predict_command(args: argparse.Namespace) -> int:
    from core.image_files import load_images

    images = load_images(args.input)
    if len(images) > args.max_images:
        print(f"{args.input}: sending the first {args.max_images} of {len(images)} images (--max-images)")
        images = images[: args.max_images]
    predictions, version = _client(args).predict_images(images, args.model, args.version, args.label)
    for i, p in enumerate(predictions):
        print(f"{args.input}[{i}]: {p.class_name} ({p.probability:.1%})  [version {version}]")
    return 0


def status_command(args: argparse.Namespace) -> int:
    from tensorflow_serving.apis import get_model_status_pb2

    for status in _client(args).status(args.model).model_version_status:
        state = get_model_status_pb2.ModelVersionStatus.State.Name(status.state)
        error = f"  error: {status.status.error_message}" if status.status.error_message else ""
        print(f"{args.model} version {status.version}: {state}{error}")
    return 0


def metadata_command(args: argparse.Namespace) -> int:
    import tensorflow as tf

    def dtype(enum_value: int) -> str:
        return tf.dtypes.as_dtype(enum_value).name

    for name, signature in sorted(_client(args).metadata(args.model).signature_def.items()):
        inputs = ", ".join(f"{k} {dtype(v.dtype)}" for k, v in sorted(signature.inputs.items()))
        outputs = ", ".join(f"{k} {dtype(v.dtype)}" for k, v in sorted(signature.outputs.items()))
        print(f"{name}: ({inputs}) -> ({outputs})")
    return 0
