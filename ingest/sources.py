"""Labelled images from what people have, for `fmnist data add`: every reader returns images and labels.

- a folder with one subfolder per class holding PNG/JPEG files (the
  `image_dataset_from_directory` convention); a subfolder is named by the class
  index `0`-`9` or by the class name, case-insensitive, with `/` written `_`
  (`T-shirt_top`);
- an IDX images file with its IDX labels file (Fashion-MNIST's own format);
- a `.npy` array of images with a labels file (`.npy` of integers, or text with
  one label per line);
- request logs of the served model with a CSV of labels people assigned
  afterwards (columns `request_id,label`; ids as `fmnist data requests` exports
  them); logged images nobody labelled are left out.

A label is a class index 0..9 or a class name. Every error names the file (and
line or folder) at fault.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from core.errors import InputError
from core.image_files import is_picture, load_images, read_bytes, read_npy
from core.vocabulary import CLASS_NAMES, MODEL_NAME, NUM_CLASSES
from serving.request_log import read_request_logs

LABEL_BY_NAME = {name.lower().replace("/", "_"): i for i, name in enumerate(CLASS_NAMES)}
LABEL_BY_NAME.update({name.lower(): i for i, name in enumerate(CLASS_NAMES)})


def parse_label(text: str, where: str) -> int:
    """A class index 0..9 or a class name (case-insensitive; `T-shirt/top` or `T-shirt_top`)."""
    value = text.strip()
    if value.isascii() and value.isdigit() and int(value) < NUM_CLASSES:
        return int(value)
    if value.lower() in LABEL_BY_NAME:
        return LABEL_BY_NAME[value.lower()]
    raise InputError(
        f"{where}: label {text!r} is neither a class index 0..{NUM_CLASSES - 1} nor a class name "
        f"({', '.join(CLASS_NAMES)})"
    )


def from_class_folders(folder: str) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of a folder of class subfolders."""
    images, labels = [], []
    for sub in sorted(Path(folder).iterdir()):
        if sub.name.startswith("."):
            continue
        if not sub.is_dir():
            raise InputError(f"{sub}: expected only class subfolders in {folder}")
        label = parse_label(sub.name, f"{folder}: subfolder '{sub.name}'")
        for file in sorted(sub.iterdir()):
            if file.name.startswith("."):
                continue
            if not is_picture(file.name):
                raise InputError(f"{file}: not a PNG/JPEG image")
            images.append(load_images(str(file)))
            labels.append(label)
    if not images:
        raise InputError(f"{folder}: holds no PNG/JPEG images in class subfolders")
    return np.concatenate(images), np.array(labels, dtype=np.int64)


def read_labels_file(path: str) -> np.ndarray:
    """Labels from a `.npy` array of integers, an IDX labels file, or text with one label per line."""
    name = path.lower()
    if name.endswith(".npy"):
        array = read_npy(read_bytes(path), path, "labels")
        if array.ndim != 1 or array.dtype.kind not in "iu":
            raise InputError(
                f"{path}: labels must be a 1-D array of whole numbers, got {array.dtype} {list(array.shape)}"
            )
        return array.astype(np.int64)
    if "idx1" in name or name.endswith(".gz"):
        from core import idx

        data = read_bytes(path)
        raw = idx.inflate(data, path, idx.LABELS_MAGIC) if name.endswith(".gz") else data
        return idx.parse_labels(raw, path).astype(np.int64)
    lines = read_bytes(path).decode("utf-8", errors="replace").splitlines()
    return np.array(
        [parse_label(line, f"{path}, line {n}") for n, line in enumerate(lines, start=1) if line.strip()],
        dtype=np.int64,
    )


def from_files(images_path: str, labels_path: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (`.npy`, IDX, PNG/JPEG) and labels from their own file, paired in order."""
    images, labels = load_images(images_path), read_labels_file(labels_path)
    if len(images) != len(labels):
        raise InputError(f"{images_path}: {len(images)} images, but {labels_path} holds {len(labels)} labels")
    return images, labels


def read_label_csv(path: str) -> dict[str, int]:
    """request id -> label from a CSV with `request_id` and `label` columns."""
    # utf-8-sig: a spreadsheet's "CSV UTF-8" starts with a byte-order mark that would hide `request_id`
    text = read_bytes(path).decode("utf-8-sig", errors="replace")
    rows = list(csv.DictReader(text.splitlines()))
    if not rows or not {"request_id", "label"} <= set(rows[0]):
        raise InputError(f"{path}: expected a CSV with columns request_id,label")
    labels: dict[str, int] = {}
    for n, row in enumerate(rows, start=2):
        request_id, label = (row.get("request_id") or "").strip(), (row.get("label") or "").strip()
        if not label:
            continue  # not labelled (yet)
        if request_id in labels:
            raise InputError(f"{path}, line {n}: request id {request_id!r} is labelled twice")
        labels[request_id] = parse_label(label, f"{path}, line {n}")
    if not labels:
        raise InputError(f"{path}: no labelled rows")
    return labels


def log_files(path: str) -> list[str]:
    if os.path.isdir(path):
        return sorted(str(f) for f in Path(path).iterdir() if f.is_file() and not f.name.startswith("."))
    return [path]


def _spans_text(spans: list[int]) -> str:
    return ("span " if len(spans) == 1 else "spans ") + ", ".join(map(str, spans))


@dataclasses.dataclass(frozen=True)
class Labelled:
    """Images and labels read from one input, what it was, and (from request logs) the image ids taken."""

    images: np.ndarray
    labels: np.ndarray
    source: str
    request_ids: tuple[str, ...] = ()
    note: str = ""  # what was left out, for the person running the command


def from_request_logs(
    logs: str, labels_csv: str, model_name: str = MODEL_NAME, added: Mapping[str, int] | None = None
) -> Labelled:
    """The logged images people labelled: request logs joined with a CSV of labels by request id.

    `added` maps image ids an earlier span took to that span: those are left
    out, so a sheet people keep filling in can be added again and again,
    each time with only its new rows, even after the logs of rows added
    earlier have rotated away.
    """
    added = added or {}
    labels = read_label_csv(labels_csv)
    reading = read_request_logs(log_files(logs), model_name)
    images, chosen, ids, found = [], [], [], set()
    for request in reading.requests:
        for image, image_id in zip(request.images, request.image_ids(), strict=True):
            found.add(image_id)
            if image_id in labels and image_id not in added:
                images.append(image)
                chosen.append(labels[image_id])
                ids.append(image_id)
    unknown = sorted(set(labels) - found - set(added))
    if unknown:
        raise InputError(
            f"{labels_csv}: {len(unknown)} request id(s) are not in the logs under {logs}, e.g. {unknown[:3]}"
        )
    earlier = sorted({added[i] for i in labels if i in added})
    if not ids:
        raise InputError(
            f"{labels_csv}: every labelled image is in a span already ({_spans_text(earlier)}); "
            "nothing new to add (pass --allow-duplicate to add them again)"
        )
    left_out = sum(1 for i in labels if i in added)
    note = f"left out {left_out} labelled images already in {_spans_text(earlier)}" if left_out else ""
    return Labelled(
        np.stack(images),
        np.array(chosen, dtype=np.int64),
        f"request logs {logs} labelled by {labels_csv}",
        tuple(ids),
        note,
    )
