"""`fmnist data requests`: logged images exported for labelling; re-running never loses a label."""

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from cli.main import main
from core.errors import EXIT_BAD_INPUT
from core.vocabulary import MODEL_NAME
from serving.request_log import RequestLogger
from tests.serving.test_request_log import declaring


def log_requests(directory: Path, *batches: np.ndarray, model: str = MODEL_NAME) -> None:
    """One Predict record per batch, in a new log file (a server's next rotation)."""
    logger = RequestLogger(str(directory), prefix=f"prediction_log-{len(list(directory.glob('*')))}")
    for batch in batches:
        request = predict_pb2.PredictRequest()
        request.inputs["images"].CopyFrom(tf.make_tensor_proto(batch))
        response = predict_pb2.PredictResponse()
        response.model_spec.name = model
        logger.log_predict(request, response)
    logger.close()


def batch(n: int, value: int) -> np.ndarray:
    return np.full((n, 28, 28), value, np.uint8)


def rows(output: Path) -> list[dict[str, str]]:
    with (output / "labels.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def digests(output: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(output.glob("*.png"))}


def export(logs: Path, output: Path) -> int:
    return main(["data", "requests", str(logs), "--output", str(output)])


def test_rerunning_keeps_every_label_people_wrote_and_adds_only_new_images(tmp_path: Path, capsys):
    logs, output = tmp_path / "logs", tmp_path / "to_label"
    logs.mkdir()
    log_requests(logs, batch(2, 10), batch(2, 20))
    assert export(logs, output) == 0
    first = rows(output)
    assert len(first) == 4 and all(row["label"] == "" for row in first)
    with (output / "labels.csv").open("w", newline="") as f:  # a person labels two images, adds a column
        writer = csv.DictWriter(f, fieldnames=["request_id", "file", "label", "notes"])
        writer.writeheader()
        for row, label in zip(first, ["Coat", "3", "", ""], strict=True):
            writer.writerow({**row, "label": label, "notes": "checked" if label else ""})
    labelled = (output / "labels.csv").read_bytes()
    pictures = digests(output)
    log_requests(logs, batch(3, 30))  # the next hour's traffic; the drift script runs this again
    capsys.readouterr()
    assert export(logs, output) == 0
    assert "3 new images" in capsys.readouterr().out
    merged = rows(output)
    assert (output / "labels.csv").read_bytes().startswith(labelled)  # every row as the person left it
    assert [row["label"] for row in merged] == ["Coat", "3", "", "", "", "", ""]
    assert [row["notes"] for row in merged[:2]] == ["checked", "checked"]
    assert {k: v for k, v in digests(output).items() if k in pictures} == pictures  # no PNG rewritten
    new_files = [row["file"] for row in merged[4:]]
    assert len(set(new_files) | set(pictures)) == 7 and all((output / f).exists() for f in new_files)
    assert export(logs, output) == 0  # nothing new: nothing changes
    assert "no new images" in capsys.readouterr().out
    assert rows(output) == merged


def test_a_labels_csv_that_cannot_be_merged_is_refused_and_left_alone(tmp_path: Path, capsys):
    logs, output = tmp_path / "logs", tmp_path / "to_label"
    logs.mkdir()
    log_requests(logs, batch(2, 10))
    output.mkdir()
    (output / "labels.csv").write_text("id;label\nx;Coat\n")  # saved by a spreadsheet in another format
    assert export(logs, output) == EXIT_BAD_INPUT
    assert f"{output / 'labels.csv'}: expected a CSV with columns request_id,file,label" in (
        capsys.readouterr().err
    )
    assert sorted(p.name for p in output.iterdir()) == ["labels.csv"]
    assert (output / "labels.csv").read_text() == "id;label\nx;Coat\n"


def test_bad_records_are_skipped_counted_and_reported(tmp_path: Path, capsys):
    logs, output = tmp_path / "logs", tmp_path / "to_label"
    logs.mkdir()
    logger = RequestLogger(str(logs))
    request = predict_pb2.PredictRequest()
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(batch(2, 10)))
    response = predict_pb2.PredictResponse()
    response.model_spec.name = MODEL_NAME
    logger.log_predict(request, response)
    request.inputs["images"].CopyFrom(declaring([5000, 28, 28]))  # 5,000 PNGs from a few bytes before
    logger.log_predict(request, response)
    logger.close()
    (log_file,) = logs.glob("*.tfrecord")
    with log_file.open("ab") as f:  # a writer killed mid-record
        f.write(b"\x40\x00\x00\x00\x00\x00\x00\x00garb")
    assert export(logs, output) == 0
    out = capsys.readouterr().out
    assert len(list(output.glob("*.png"))) == 2 and len(rows(output)) == 2
    assert "skipped 2 log records: 1 a tensor whose values do not match its declared shape" in out
    assert "1 truncated or corrupt record (the rest of its file)" in out


def test_logs_without_images_for_the_model_write_nothing(tmp_path: Path, capsys):
    logs, output = tmp_path / "logs", tmp_path / "new" / "to_label"
    logs.mkdir()
    log_requests(logs, batch(2, 10), model="shoes")
    assert export(logs, output) == EXIT_BAD_INPUT
    assert "no logged requests with images" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()  # no empty output directory left behind


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig"])  # a spreadsheet's "CSV UTF-8" has a BOM
def test_labels_filled_in_by_a_spreadsheet_are_added(tmp_path: Path, encoding: str):
    logs, output = tmp_path / "logs", tmp_path / "to_label"
    logs.mkdir()
    log_requests(logs, batch(2, 10))
    assert export(logs, output) == 0
    filled = [{**row, "label": "Bag"} for row in rows(output)]
    with (output / "labels.csv").open("w", newline="", encoding=encoding) as f:
        writer = csv.DictWriter(f, fieldnames=["request_id", "file", "label"])
        writer.writeheader()
        writer.writerows(filled)
    assert export(logs, output) == 0  # the merge reads it too
    argv = [
        "data",
        "add",
        str(logs),
        "--labels",
        str(output / "labels.csv"),
        "--workdir",
        str(tmp_path / "w"),
    ]
    assert main(argv) == 0


def test_labels_saved_while_the_images_are_exported_are_not_overwritten(tmp_path: Path, monkeypatch, capsys):
    import ingest.labelling

    logs, output = tmp_path / "logs", tmp_path / "to_label"
    logs.mkdir()
    log_requests(logs, batch(2, 10))
    assert export(logs, output) == 0
    log_requests(logs, batch(2, 20))
    saved_meanwhile = (output / "labels.csv").read_bytes().replace(b".png,\r\n", b".png,Bag\r\n", 1)
    assert b"Bag" in saved_meanwhile
    write_pngs = ingest.labelling._write_pngs

    def person_saves_during_the_export(*args):
        rows = write_pngs(*args)
        (output / "labels.csv").write_bytes(saved_meanwhile)
        return rows

    monkeypatch.setattr(ingest.labelling, "_write_pngs", person_saves_during_the_export)
    assert export(logs, output) == EXIT_BAD_INPUT
    assert "changed while the images were exported; nothing was added, run again" in capsys.readouterr().err
    assert (output / "labels.csv").read_bytes() == saved_meanwhile
    assert len(list(output.glob("*.png"))) == 2  # the new PNGs were taken back
