"""Logged request images exported for people to label: `<output>/<n>.png` and a `labels.csv` to fill in.

`fmnist data requests` writes each logged image as a PNG and a row
`request_id,file,label` with the label empty; people fill in the labels, and
`fmnist data add LOGS --labels labels.csv` takes what they labelled.

It is meant to run again and again (the README's hourly drift script runs it
on every drift verdict, while people are labelling), so it merges and never
overwrites: an existing `labels.csv` is kept byte for byte (labels, order,
columns people added), images it already lists are not exported again (their
PNGs are not rewritten), and only images new in the logs are appended, under
file names no existing file has. A `labels.csv` that is not such a CSV is
refused and left alone. The CSV is replaced atomically, and only when nobody
changed it while the PNGs were written; otherwise the new PNGs are removed
and nothing changes.

The new images are appended in an order (`--order`; rows already in the CSV
never move, and PNG numbers follow the new rows):

- `logged` (the default): as the logs hold them. Labelling from the top gives
  a fair sample of the traffic, whose labels measure the model's accuracy
  truly and pass the label gate as often as the traffic deserves.
- `least-confident`: the lowest top probability of the logged answer first:
  the answers most likely wrong, which teach a retrained model most.
- `class-doubt`: the answers the accuracy estimate's per-class view doubts
  most first (`class_doubt_scores`): this also finds answers that are wrong
  yet confident when they pile onto one class, which least-confident misses.

Both ranked orders put the model's likely mistakes first: a span labelled
from the top of them is far harder than the traffic, so the served model
agrees with its labels less than with a fair sample, and the label gate may
refuse it. Images whose answers were not logged cannot be ranked: they go
last, in log order.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import re
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from core.accuracy_estimate import Estimator, estimator_path, load_estimator
from core.errors import InputError

if TYPE_CHECKING:  # the log readers load TensorFlow: imported when an export runs, not with ORDERS
    from serving.request_log import LoggedRequest

LABELS_CSV = "labels.csv"
COLUMNS = ("request_id", "file", "label")
PNG_NAME = re.compile(r"^([0-9]+)\.png$", re.ASCII)
ORDER_LOGGED, ORDER_LEAST_CONFIDENT, ORDER_CLASS_DOUBT = "logged", "least-confident", "class-doubt"
ORDERS = (ORDER_LOGGED, ORDER_LEAST_CONFIDENT, ORDER_CLASS_DOUBT)
ORDER_WORDS = {
    ORDER_LOGGED: "in log order",
    ORDER_LEAST_CONFIDENT: "least confident first",
    ORDER_CLASS_DOUBT: "most doubted by the per-class accuracy estimate first",
}


@dataclasses.dataclass(frozen=True)
class Export:
    """What one export did: images written now, rows kept from before (and how many labelled), skips."""

    output: str
    new: int
    kept: int
    labelled: int
    skipped_records: int
    skipped: str
    order: str = ORDER_LOGGED
    unranked: int = 0  # new images without logged answers, put last

    def summary(self) -> str:
        csv_path = os.path.join(self.output, LABELS_CSV)
        before = f" ({self.kept} rows, {self.labelled} labelled, kept as they were)" if self.kept else ""
        if self.new:
            lines = [f"exported {self.new} new images to {self.output} ({ORDER_WORDS[self.order]}){before}; "
                     f"fill in {csv_path}, then `fmnist data add`"]  # fmt: skip
        else:
            lines = [f"no new images; {csv_path} unchanged{before}"]
        if self.unranked:
            lines.append(
                f"{self.unranked} new images have no logged answers to rank by: put last, in log order"
            )
        if self.skipped_records:
            lines.append(f"skipped {self.skipped_records} log records: {self.skipped}")
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class ExportCsv:
    """An existing `labels.csv`: its exact bytes, its columns and rows."""

    data: bytes
    columns: list[str]
    rows: list[dict[str, str]]


def read_export_csv(path: str) -> ExportCsv | None:
    """The `labels.csv` at `path` (None if absent); InputError naming it unless it has our columns."""
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8-sig")  # a spreadsheet's "CSV UTF-8" starts with a byte-order mark
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text ({err}); nothing was exported") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = list(reader)
    if not set(COLUMNS) <= set(reader.fieldnames or ()):
        raise InputError(
            f"{path}: expected a CSV with columns {','.join(COLUMNS)} (found {reader.fieldnames}); "
            "it is left as it is and nothing was exported"
        )
    return ExportCsv(data, list(reader.fieldnames), rows)


def _first_free_number(output: str, listed: ExportCsv | None) -> int:
    """The number after every `<n>.png` on disk or in the CSV, so no file is ever written over."""
    names = os.listdir(output) + [row.get("file") or "" for row in (listed.rows if listed else [])]
    numbers = [int(m.group(1)) for m in map(PNG_NAME.match, names) if m]
    return max(numbers, default=-1) + 1


@dataclasses.dataclass(frozen=True)
class NewImage:
    """A logged image not listed yet: its id, pixels, and the logged answer and version (when logged)."""

    image_id: str
    pixels: np.ndarray
    probabilities: np.ndarray | None
    version: int | None


def _new_images(requests: list[LoggedRequest], known: set[str]) -> list[NewImage]:
    """Every logged image not listed yet, in log order."""
    return [
        NewImage(image_id, image, None if request.probabilities is None else request.probabilities[i],
                 request.version)
        for request in requests
        for i, (image, image_id) in enumerate(zip(request.images, request.image_ids(), strict=True))
        if image_id not in known
    ]  # fmt: skip


def class_doubt_scores(probabilities: np.ndarray, batch: np.ndarray, estimator: Estimator) -> np.ndarray:
    """Per answer, its chance of being right at the low end of the estimate's per-class view; lowest first.

    The estimate's per-class view (DoC) gives answer i, naming class k with
    top probability c_i, the chance c_i + g_k of being right, g_k being class
    k's calibration gap on the held-out images; on `batch` (the answers of the
    same version in these logs) the class's estimate is a_k with 90 % interval
    [low_k, high_k]. The score is (c_i + g_k) * low_k / a_k: the chance scaled
    so that class k's answers average to low_k, its most pessimistic figure.
    low_k falls below a_k when the answers pile onto class k beyond its
    held-out share or drift far from the held-out figure, so a class that
    gathers confidently wrong answers comes forward, which confidence alone
    never shows. The other side: a real rise of one class in the traffic piles
    up alike and brings its (right) answers forward too. A class with too few
    answers for a per-class figure is scaled by 1.
    """
    estimate = estimator.estimate(batch)
    gap = np.array([g if g is not None else 0.0 for g in estimator.class_offset])
    doubt = np.array([
        c.low / c.value if c.value else 1.0
        for c in (estimate.per_class[name] for name in estimator.class_names)
    ])  # fmt: skip
    predicted, confidence = probabilities.argmax(axis=1), probabilities.max(axis=1)
    return np.clip(confidence + gap[predicted], 0.0, 1.0) * doubt[predicted]


def ranked(
    images: list[NewImage],
    order: str,
    scores: Callable[[list[NewImage]], np.ndarray] | None = None,
) -> tuple[list[NewImage], int]:
    """The images in `order` and how many could not be ranked (no logged answer: last, in log order).

    `scores` gives the ranked images' class-doubt scores (`class_doubt_scores`).
    Ties keep log order.
    """
    if order == ORDER_LOGGED:
        return images, 0
    answered = [image for image in images if image.probabilities is not None]
    unanswered = [image for image in images if image.probabilities is None]
    if not answered:
        return images, len(unanswered)
    if order == ORDER_LEAST_CONFIDENT:
        keys = np.stack([image.probabilities for image in answered]).max(axis=1)
    elif order == ORDER_CLASS_DOUBT:
        if scores is None:
            raise ValueError("the class-doubt order needs the answering versions' estimators")
        keys = scores(answered)
    else:
        raise ValueError(f"unknown order {order!r}; one of {list(ORDERS)}")
    return [answered[i] for i in np.argsort(keys, kind="stable")] + unanswered, len(unanswered)


def doubt_scorer(
    requests: list[LoggedRequest], model_dir_of: Callable[[int], str]
) -> Callable[[list[NewImage]], np.ndarray]:
    """Class-doubt scores of new images, each read with the estimator of the version that answered it.

    Each version's per-class view is estimated on all its logged answers in
    these logs (not the new ones alone: the more answers, the steadier the
    figure). A version without an estimator, or an answer without a version,
    is an InputError naming it.
    """

    def scores(images: list[NewImage]) -> np.ndarray:
        result = np.empty(len(images))
        for version in sorted({image.version for image in images}, key=lambda v: (v is None, v)):
            if version is None:
                raise InputError(
                    "--order class-doubt: some logged answers do not say which version gave them"
                )
            mine = [i for i, image in enumerate(images) if image.version == version]
            estimator = load_estimator(estimator_path(model_dir_of(version)))
            batch = np.concatenate([
                r.probabilities for r in requests if r.version == version and r.probabilities is not None
            ])  # fmt: skip
            result[mine] = class_doubt_scores(
                np.stack([images[i].probabilities for i in mine]), batch, estimator
            )
        return result

    return scores


def _write_pngs(output: str, first: int, images: list[NewImage]) -> list[dict[str, str]]:
    """Each image as `<n>.png` (created, never replaced); the rows for them. Written files go on failure."""
    from PIL import Image

    rows, written = [], []
    try:
        for number, image in enumerate(images, start=first):
            name = f"{number:06d}.png"
            with open(os.path.join(output, name), "xb") as f:
                written.append(f.name)
                Image.fromarray(image.pixels).save(f, format="PNG")
            rows.append({"request_id": image.image_id, "file": name, "label": ""})
    except BaseException:
        _remove(written)
        raise
    return rows


def _remove(paths: list[str]) -> None:
    for path in paths:
        if os.path.exists(path):
            os.remove(path)


def _appended(listed: ExportCsv | None, rows: list[dict[str, str]]) -> bytes:
    """The CSV: the existing bytes unchanged, then the new rows in its columns and line endings."""
    columns = listed.columns if listed else list(COLUMNS)
    ending = "\n" if listed and b"\r\n" not in listed.data else "\r\n"
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator=ending)
    if listed is None:
        writer.writeheader()
    writer.writerows(rows)
    head = listed.data if listed else b""
    if head and not head.endswith(b"\n"):
        head += ending.encode()
    return head + buffer.getvalue().encode("utf-8")


def _replace_unless_changed(path: str, listed: ExportCsv | None, data: bytes) -> None:
    """Rename `data` over `path`, refusing when the file is no longer what was read (someone saved it)."""
    staging = os.path.join(os.path.dirname(path), f".{LABELS_CSV}.{uuid.uuid4().hex[:8]}")
    try:
        with open(staging, "wb") as f:
            f.write(data)
        now = read_export_csv(path)
        if (now.data if now else None) != (listed.data if listed else None):
            raise InputError(f"{path}: changed while the images were exported; nothing was added, run again")
        os.replace(staging, path)
    finally:
        _remove([staging])


def export_for_labelling(
    logs: str,
    output: str,
    model: str,
    order: str = ORDER_LOGGED,
    model_dir_of: Callable[[int], str] | None = None,
) -> Export:
    """Append the logged images of `model` under `logs` that `<output>/labels.csv` does not list yet.

    The new images are appended in `order` (the module docstring); for
    `class-doubt`, `model_dir_of(version)` is where each answering version's
    exported model (and so its estimator) lies.
    """
    from ingest.sources import log_files
    from serving.request_log import read_request_logs

    path = os.path.join(output, LABELS_CSV)
    listed = read_export_csv(path)
    reading = read_request_logs(log_files(logs), model)
    known = {row.get("request_id") or "" for row in listed.rows} if listed else set()
    images = _new_images(reading.requests, known)
    if not images and listed is None:
        raise InputError(f"{logs}: no logged requests with images (skipped: {reading.skipped_text()})")
    scores = doubt_scorer(reading.requests, model_dir_of) if model_dir_of else None  # read only if asked
    images, unranked = ranked(images, order, scores)
    rows = _write_pngs(output, _first_free_number(output, listed), images)
    if rows:
        try:
            _replace_unless_changed(path, listed, _appended(listed, rows))
        except BaseException:
            _remove([os.path.join(output, row["file"]) for row in rows])
            raise
    return Export(
        output=output,
        new=len(rows),
        kept=len(listed.rows) if listed else 0,
        labelled=sum(1 for row in listed.rows if (row.get("label") or "").strip()) if listed else 0,
        skipped_records=sum(reading.skipped.values()),
        skipped=reading.skipped_text(),
        order=order,
        unranked=unranked if rows else 0,
    )
