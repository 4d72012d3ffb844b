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
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import re
import uuid

import numpy as np

from core.errors import InputError
from ingest.sources import log_files
from serving.request_log import LoggedRequest, read_request_logs

LABELS_CSV = "labels.csv"
COLUMNS = ("request_id", "file", "label")
PNG_NAME = re.compile(r"^([0-9]+)\.png$", re.ASCII)


@dataclasses.dataclass(frozen=True)
class Export:
    """What one export did: images written now, rows kept from before (and how many labelled), skips."""

    output: str
    new: int
    kept: int
    labelled: int
    skipped_records: int
    skipped: str

    def summary(self) -> str:
        csv_path = os.path.join(self.output, LABELS_CSV)
        before = f" ({self.kept} rows, {self.labelled} labelled, kept as they were)" if self.kept else ""
        if self.new:
            lines = [f"exported {self.new} new images to {self.output}{before}; fill in {csv_path}, "
                     "then `fmnist data add`"]  # fmt: skip
        else:
            lines = [f"no new images; {csv_path} unchanged{before}"]
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


def _new_images(requests: list[LoggedRequest], known: set[str]) -> list[tuple[str, np.ndarray]]:
    """(image id, pixels) of every logged image not listed yet, in log order."""
    return [
        (image_id, image)
        for request in requests
        for image, image_id in zip(request.images, request.image_ids(), strict=True)
        if image_id not in known
    ]


def _write_pngs(output: str, first: int, images: list[tuple[str, np.ndarray]]) -> list[dict[str, str]]:
    """Each image as `<n>.png` (created, never replaced); the rows for them. Written files go on failure."""
    from PIL import Image

    rows, written = [], []
    try:
        for number, (image_id, image) in enumerate(images, start=first):
            name = f"{number:06d}.png"
            with open(os.path.join(output, name), "xb") as f:
                written.append(f.name)
                Image.fromarray(image).save(f, format="PNG")
            rows.append({"request_id": image_id, "file": name, "label": ""})
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


def export_for_labelling(logs: str, output: str, model: str) -> Export:
    """Append the logged images of `model` under `logs` that `<output>/labels.csv` does not list yet."""
    path = os.path.join(output, LABELS_CSV)
    listed = read_export_csv(path)
    reading = read_request_logs(log_files(logs), model)
    known = {row.get("request_id") or "" for row in listed.rows} if listed else set()
    images = _new_images(reading.requests, known)
    if not images and listed is None:
        raise InputError(f"{logs}: no logged requests with images (skipped: {reading.skipped_text()})")
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
    )
