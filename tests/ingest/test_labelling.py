"""`fmnist data requests`: logged images exported for labelling; re-running never loses a label."""

import csv
import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from cli.main import main
from core import accuracy_estimate as ae
from core.errors import EXIT_BAD_INPUT
from core.vocabulary import CLASS_NAMES, MODEL_NAME, NUM_CLASSES
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


def log_answered(directory: Path, *batches: tuple[np.ndarray, np.ndarray | None], version: int = 7) -> None:
    """A Predict record per (images, probabilities) batch answered by `version`; None: answers not logged."""
    logger = RequestLogger(str(directory), prefix=f"prediction_log-{len(list(directory.glob('*')))}")
    for images, probabilities in batches:
        request = predict_pb2.PredictRequest()
        request.inputs["images"].CopyFrom(tf.make_tensor_proto(images))
        response = predict_pb2.PredictResponse()
        response.model_spec.name = MODEL_NAME
        response.model_spec.version.value = version
        if probabilities is not None:
            response.outputs["probabilities"].CopyFrom(tf.make_tensor_proto(probabilities.astype(np.float32)))
        logger.log_predict(request, response)
    logger.close()


def distinct(first: int, n: int) -> np.ndarray:
    """n images, image i filled with the value first + i: each PNG says which image it is."""
    return np.stack([np.full((28, 28), first + i, np.uint8) for i in range(n)])


def answers(top: list[float], classes: list[int]) -> np.ndarray:
    """Probabilities naming `classes` with top probabilities `top`, the rest spread evenly."""
    p = np.tile(((1 - np.array(top)) / (NUM_CLASSES - 1))[:, None], (1, NUM_CLASSES))
    p[np.arange(len(top)), classes] = top
    return p


def exported_values(output: Path) -> list[int]:
    """The value each row's PNG is filled with, in row order (which logged image each row is)."""
    from PIL import Image

    return [int(np.asarray(Image.open(output / row["file"]))[0, 0]) for row in rows(output)]


def test_least_confident_first_and_a_rerun_appends_its_new_images_ranked_after_the_labelled_rows(
    tmp_path: Path, capsys
):
    logs, output = tmp_path / "logs", tmp_path / "to_label"
    logs.mkdir()
    log_answered(logs, (distinct(10, 3), answers([0.9, 0.3, 0.6], [0, 1, 2])), (distinct(20, 1), None))
    assert main(["data", "requests", str(logs), "--output", str(output), "--order", "least-confident"]) == 0
    out = capsys.readouterr().out
    assert "least confident first" in out and "1 new images have no logged answers" in out
    assert exported_values(output) == [11, 12, 10, 20]  # 0.3, 0.6, 0.9, then the unanswered one
    assert sorted(row["file"] for row in rows(output)) == [row["file"] for row in rows(output)]
    labelled = (output / "labels.csv").read_bytes().replace(b".png,\r\n", b".png,Trouser\r\n", 1)
    (output / "labels.csv").write_bytes(labelled)
    log_answered(logs, (distinct(30, 2), answers([0.8, 0.2], [3, 4])))
    assert main(["data", "requests", str(logs), "--output", str(output), "--order", "least-confident"]) == 0
    assert (output / "labels.csv").read_bytes().startswith(labelled)
    assert exported_values(output) == [11, 12, 10, 20, 31, 30]
    assert rows(output)[0]["label"] == "Trouser"


@pytest.fixture
def doubted(tmp_path: Path) -> dict:
    """Logs of version 7, whose answers pile onto Bag (confident) while the rest are unsure; its estimator.

    The estimator was fitted on calibrated answers of evenly shared classes, and
    widens its per-class intervals by one point per point of departure or pile-up.
    """
    from tests.monitoring.test_drift_report import calibrated_answers

    held_out_labels = np.arange(3000) % NUM_CLASSES
    fitted = ae.fit(calibrated_answers(held_out_labels, seed=1), held_out_labels)
    serving = tmp_path / "serving"
    ae.save_estimator(
        dataclasses.replace(fitted, class_margin_low=1.0, class_margin_high=1.0),
        ae.estimator_path(str(serving / MODEL_NAME / "7")),
    )
    bag = CLASS_NAMES.index("Bag")
    others = [k for k in range(NUM_CLASSES) if k != bag]
    logs = tmp_path / "logs"
    logs.mkdir()
    log_answered(
        logs,
        (distinct(0, 90), answers([0.6] * 90, [others[i % len(others)] for i in range(90)])),
        (distinct(100, 150), answers([0.95] * 150, [bag] * 150)),
    )
    return {"logs": logs, "serving": serving}


@pytest.mark.parametrize(
    ("order", "first"), [("class-doubt", range(100, 250)), ("least-confident", range(90))]
)
def test_class_doubt_brings_forward_confident_answers_piling_onto_one_class(
    doubted: dict, tmp_path: Path, order: str, first: range
):
    output = tmp_path / order
    argv = ["data", "requests", str(doubted["logs"]), "--output", str(output), "--order", order]
    assert main([*argv, "--serving-dir", str(doubted["serving"])]) == 0
    values = exported_values(output)
    assert sorted(values[: len(first)]) == list(first) and len(values) == 240


def test_class_doubt_without_the_versions_estimator_exits_2_naming_it(doubted: dict, tmp_path: Path, capsys):
    output = tmp_path / "new" / "to_label"
    argv = ["data", "requests", str(doubted["logs"]), "--output", str(output), "--order", "class-doubt"]
    assert main([*argv, "--serving-dir", str(tmp_path / "elsewhere")]) == EXIT_BAD_INPUT
    missing = ae.estimator_path(str(tmp_path / "elsewhere" / MODEL_NAME / "7"))
    assert f"{missing}: no accuracy estimator" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()  # nothing written, not even the directory
