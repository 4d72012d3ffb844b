"""The batch to check for drift, from whatever the user has: logs, examples, arrays, images.

- a directory (or file) of TF Serving request logs (`PredictionLog` TFRecords,
  from `fmnist serve --request-log-dir`, `fmnist log-proxy` or any logger
  writing that format): the images of each logged Predict or Classify request
  for the model asked for (optionally one version of it) and, when logged, the
  model's answers; damaged records and requests for other models are skipped
  and counted (`Batch.skipped`);
- a directory of PNG/JPEG images, or of TFRecords of the project's examples
  (`fmnist data prepare` output, or an ExampleGen split directory);
- one file: TFRecords of the project's examples, an IDX images file, a `.npy`
  array, a PNG/JPEG.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from core.errors import InputError
from core.examples import read_example_images
from core.image_files import is_picture, load_images
from core.vocabulary import MODEL_NAME
from serving.request_log import LOG_SUFFIX, is_request_log, read_request_logs


@dataclasses.dataclass
class Batch:
    """Images [n, 28, 28] uint8, the model's probabilities [n, 10] when known, and where they came from."""

    images: np.ndarray
    source: str
    probabilities: np.ndarray | None = None
    skipped: str = ""  # request-log records left out, by reason
    answered_by: tuple[int, ...] = ()  # request logs: the versions whose answers were logged


def batch_from_logs(files: list[str], source: str, model_name: str, version: int | None) -> Batch:
    """The logged images (and answers, when every request carries them) of `model_name` in `files`."""
    reading = read_request_logs(files, model_name, version)
    which = f"model '{model_name}'" + (f" version {version}" if version is not None else "")
    if not reading.requests:
        raise InputError(
            f"{source}: no logged requests with images for {which} (skipped: {reading.skipped_text()})"
        )
    answers = [r.probabilities for r in reading.requests]
    logged = all(a is not None for a in answers)
    return Batch(
        np.concatenate([r.images for r in reading.requests]),
        source,
        np.concatenate(answers) if logged else None,
        reading.skipped_text() if reading.skipped else "",
        tuple(sorted({r.version for r in reading.requests if r.version is not None})) if logged else (),
    )


def _visible_files(location: Path) -> list[str]:
    return sorted(str(f) for f in location.iterdir() if f.is_file() and not f.name.startswith("."))


def _request_logs(files: list[str]) -> list[str]:
    return [f for f in files if f.endswith(LOG_SUFFIX) and is_request_log(f)]


def request_log_files(path: str) -> list[str]:
    """The request-log files at `path` (a directory of them, or one); InputError naming it if none."""
    location = Path(path)
    if not location.exists():
        raise InputError(f"{path}: no such file or directory")
    logs = _request_logs(_visible_files(location) if location.is_dir() else [path])
    if not logs:
        raise InputError(f"{path}: holds no request logs (PredictionLog TFRecords named *{LOG_SUFFIX})")
    return logs


def load_batch(path: str, model_name: str = MODEL_NAME, logged_version: int | None = None) -> Batch:
    """The batch at `path` (see the module docstring); errors name the path and what was wrong."""
    location = Path(path)
    if not location.exists():
        raise InputError(f"{path}: no such file or directory")
    if location.is_dir():
        files = _visible_files(location)
        logs = _request_logs(files)
        if logs:
            return batch_from_logs(logs, path, model_name, logged_version)
        pictures = [f for f in files if is_picture(f)]
        if pictures:
            return Batch(np.concatenate([load_images(f) for f in pictures]), path)
        records = [f for f in files if ".tfrecord" in f or Path(f).name.startswith("data_tfrecord")]
        if records:
            return Batch(read_example_images(records), path)
        raise InputError(f"{path}: holds no request logs, TFRecords of examples or PNG/JPEG images")
    if path.endswith(LOG_SUFFIX) and is_request_log(path):
        return batch_from_logs([path], path, model_name, logged_version)
    return Batch(load_images(path), path)
