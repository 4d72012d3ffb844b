"""`fmnist data add`: the next span from class folders, IDX or .npy files, or labelled request logs."""

import csv
import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2, predict_pb2

from cli.main import main
from core.errors import EXIT_BAD_INPUT
from core.examples import read_labelled_images
from core.image_files import load_images
from serving.request_log import RequestLogger
from tests.core.test_image_files import npy_claiming, picture_cases


@pytest.fixture(scope="module")
def images(official_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    data = load_images(str(official_dir / "t10k-images-idx3-ubyte.gz"))[:12]
    labels = np.frombuffer(
        gzip.decompress((official_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())[8:20], np.uint8
    )
    return data, labels.astype(np.int64)


def span_contents(data_dir: Path, span: int) -> tuple[np.ndarray, np.ndarray, dict]:
    directory = data_dir / f"span-{span}"
    manifest = json.loads((directory / "manifest.json").read_text())
    pixels, labels = read_labelled_images(sorted(str(p) for p in directory.glob("*.tfrecord.gz")))
    return pixels, labels, manifest


def sort_by_pixels(pixels: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Round-robin shards reorder examples: compare as sets of (image, label) pairs."""
    order = np.lexsort(pixels.reshape(len(pixels), -1).T)
    return pixels[order], labels[order]


def test_a_folder_of_class_subfolders_becomes_the_next_span(images, tmp_path: Path):
    from PIL import Image

    data, labels = images
    folder = tmp_path / "new"
    names = {0: "T-shirt_top", 1: "trouser", 9: "9"}  # class names any case, or class indices
    for i, (image, label) in enumerate(zip(data, labels, strict=True)):
        sub = folder / names.get(int(label), str(int(label)))
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(sub / f"{i}.png")
    workdir = tmp_path / "w"
    assert main(["data", "add", str(folder), "--workdir", str(workdir)]) == 0
    argv = ["data", "add", str(folder), "--workdir", str(workdir), "--allow-duplicate"]
    assert main(argv) == 0  # the same images once more, on purpose: the next span, 2
    pixels, got, manifest = span_contents(workdir / "data", 2)
    want_pixels, want_labels = sort_by_pixels(data, labels)
    got_pixels, got_labels = sort_by_pixels(pixels, got)
    np.testing.assert_array_equal(got_pixels, want_pixels)
    np.testing.assert_array_equal(got_labels, want_labels)
    assert manifest["span"] == 2 and manifest["examples"] == len(data)
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((workdir / "data" / "span-2" / name).read_bytes()).hexdigest() == digest


def test_idx_and_npy_files_with_their_labels(images, tmp_path: Path, official_dir: Path):
    data, labels = images
    workdir = tmp_path / "w"
    np.save(tmp_path / "x.npy", data)
    (tmp_path / "y.txt").write_text("\n".join(["Ankle boot", *map(str, labels[1:])]))  # names or indices
    assert (
        main(
            [
                "data",
                "add",
                str(tmp_path / "x.npy"),
                "--labels",
                str(tmp_path / "y.txt"),
                "--workdir",
                str(workdir),
            ]
        )
        == 0
    )
    np.testing.assert_array_equal(
        sort_by_pixels(*span_contents(workdir / "data", 1)[:2])[1], sort_by_pixels(data, labels)[1]
    )
    idx_images, idx_labels = (
        official_dir / "t10k-images-idx3-ubyte.gz",
        official_dir / "t10k-labels-idx1-ubyte.gz",
    )
    argv = ["data", "add", str(idx_images), "--labels", str(idx_labels), "--workdir", str(workdir)]
    assert main(argv) == 0
    assert span_contents(workdir / "data", 2)[2]["examples"] == 10_000


def _log(directory: Path, data: np.ndarray) -> list[str]:
    """Log Predict and Classify requests for the model and one for another model; return the image ids."""
    logger = RequestLogger(str(directory))
    for start in (0, 4):
        request = predict_pb2.PredictRequest()
        request.inputs["images"].CopyFrom(tf.make_tensor_proto(data[start : start + 4]))
        response = predict_pb2.PredictResponse()
        response.model_spec.name = "fashion_mnist"
        logger.log_predict(request, response)
    other = predict_pb2.PredictResponse()
    other.model_spec.name = "shoes"
    logger.log_predict(request, other)
    classify = classification_pb2.ClassificationRequest()
    for image in data[8:12]:
        example = classify.input.example_list.examples.add()
        example.features.feature["image"].int64_list.value.extend(image.reshape(-1).tolist())
    answer = classification_pb2.ClassificationResponse()
    answer.model_spec.name = "fashion_mnist"
    logger.log_classify(classify, answer)
    logger.close()
    name = next(directory.glob("*.tfrecord")).name
    return [f"{name}:{record}:{i}" for record in (0, 1) for i in range(4)] + [
        f"{name}:3:{i}" for i in range(4)
    ]


def test_request_logs_joined_with_labels_people_assigned(images, tmp_path: Path, capsys):
    data, labels = images
    ids = _log(tmp_path / "logs", data)
    assert main(["data", "requests", str(tmp_path / "logs"), "--output", str(tmp_path / "export")]) == 0
    exported = list(csv.DictReader((tmp_path / "export" / "labels.csv").open()))
    assert [row["request_id"] for row in exported] == ids and len(
        list((tmp_path / "export").glob("*.png"))
    ) == 12
    with (tmp_path / "labels.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["request_id", "label"])
        for image_id, label in list(zip(ids, labels, strict=True))[:10]:  # two images nobody labelled
            writer.writerow([image_id, int(label)])
    workdir = tmp_path / "w"
    assert (
        main(
            [
                "data",
                "add",
                str(tmp_path / "logs"),
                "--labels",
                str(tmp_path / "labels.csv"),
                "--workdir",
                str(workdir),
            ]
        )
        == 0
    )
    pixels, got, manifest = span_contents(workdir / "data", 1)
    assert manifest["examples"] == 10
    np.testing.assert_array_equal(sort_by_pixels(pixels, got)[1], sort_by_pixels(data[:10], labels[:10])[1])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda d, x, y: np.save(d / "x.npy", x) or [str(d / "x.npy")],
            "x.npy: an images file needs --labels",
        ),
        (
            lambda d, x, y: np.save(d / "x.npy", x)
            or (d / "y.txt").write_text("0\n11\n")
            and [str(d / "x.npy"), "--labels", str(d / "y.txt")],
            "y.txt, line 2: label '11' is neither a class index",
        ),
        (
            lambda d, x, y: np.save(d / "x.npy", x)
            or (d / "y.txt").write_text("0\n1\n")
            and [str(d / "x.npy"), "--labels", str(d / "y.txt")],
            "x.npy: 12 images, but",
        ),
        (
            lambda d, x, y: np.save(d / "x.npy", x / 255.0)
            or (d / "y.txt").write_text("0\n" * 12)
            and [str(d / "x.npy"), "--labels", str(d / "y.txt")],
            "255 times too dark",
        ),
        (
            lambda d, x, y: (d / "sneakers_and_more").mkdir() or [str(d)],
            "is neither a class index 0..9 nor a class name",
        ),
        (lambda d, x, y: [str(d / "missing")], "missing: no such file or directory"),
        (
            lambda d, x, y: np.save(d / "x.npy", x)
            or [str(d / "x.npy"), "--labels", str(npy_claiming(d / "y.npy", (10**9,), "<i8", b""))],
            "y.npy: declares shape (1000000000,) of int64 (8000000000 bytes), but holds 0 bytes",
        ),
        (
            lambda d, x, y: np.save(d / "x.npy", x)
            or (d / "y-idx1-ubyte.gz").write_bytes(b"\x1f\x8b\x08garbage")
            and [str(d / "x.npy"), "--labels", str(d / "y-idx1-ubyte.gz")],
            "y-idx1-ubyte.gz: cannot be read as gzip-compressed IDX",
        ),
    ],
    ids=[
        "no-labels",
        "label-range",
        "count-mismatch",
        "unit-floats",
        "unknown-class-folder",
        "missing",
        "labels-npy-header-bomb",
        "labels-idx-gzip-damaged",
    ],
)
def test_bad_input_writes_nothing_and_exits_2(images, tmp_path: Path, capsys, make, message: str):
    data, labels = images
    source = tmp_path / "in"
    source.mkdir()
    argv = make(source, data, labels)
    workdir = tmp_path / "w"
    assert main(["data", "add", *argv, "--workdir", str(workdir)]) == EXIT_BAD_INPUT
    assert message in capsys.readouterr().err
    assert not workdir.exists()  # no span, no staging directory, not even an empty data directory


@pytest.mark.parametrize(
    ("write", "message"), [c[1:] for c in picture_cases()], ids=[c[0] for c in picture_cases()]
)
def test_a_picture_that_would_be_changed_is_refused_naming_it(images, tmp_path: Path, capsys, write, message):
    from PIL import Image

    folder = tmp_path / "new"
    (folder / "0").mkdir(parents=True)
    Image.fromarray(images[0][0]).save(folder / "0" / "good.png")
    bad = write(folder / "0")
    workdir = tmp_path / "w"
    assert main(["data", "add", str(folder), "--workdir", str(workdir)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert f"error: {bad}: " in err and message in err
    assert not workdir.exists()


def add_npy(folder: Path, data: np.ndarray, labels: np.ndarray, workdir: Path) -> list[str]:
    """Save images and labels as .npy files in `folder`; the `fmnist data add` arguments for them."""
    np.save(folder / "x.npy", data)
    np.save(folder / "y.npy", labels)
    return [
        "data",
        "add",
        str(folder / "x.npy"),
        "--labels",
        str(folder / "y.npy"),
        "--workdir",
        str(workdir),
    ]


def test_the_same_input_added_twice_is_refused_naming_the_earlier_span(images, tmp_path: Path, capsys):
    data, labels = images
    workdir = tmp_path / "w"
    argv = add_npy(tmp_path, data, labels, workdir)
    assert main(argv) == 0
    before = sorted((workdir / "data").rglob("*"))
    assert main(argv) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert f"span 1 ({workdir / 'data' / 'span-1'}) holds these 12 examples already" in err
    assert "--allow-duplicate" in err
    assert sorted((workdir / "data").rglob("*")) == before  # no span 2, no staging directory
    order = np.arange(len(data))[::-1]  # the same examples in another order are the same examples
    assert main(add_npy(tmp_path, data[order], labels[order], workdir)) == EXIT_BAD_INPUT


def test_a_span_written_before_examples_were_fingerprinted_is_found_by_its_files(images, tmp_path: Path):
    data, labels = images
    workdir = tmp_path / "w"
    argv = add_npy(tmp_path, data, labels, workdir)
    assert main(argv) == 0
    manifest_path = workdir / "data" / "span-1" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["examples_sha256"]  # as the manifests of spans written before
    manifest_path.write_text(json.dumps(manifest))
    assert main(argv) == EXIT_BAD_INPUT
    assert not (workdir / "data" / "span-2").exists()


def label_rows(csv_path: Path, ids: list[str], labels: np.ndarray) -> None:
    """Write the labels a person assigned (request_id,label)."""
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["request_id", "label"])
        writer.writerows([image_id, int(label)] for image_id, label in zip(ids, labels, strict=True))


def test_labelled_requests_are_added_once_as_people_label_more(images, tmp_path: Path, capsys):
    data, labels = images
    ids = _log(tmp_path / "logs", data)
    workdir, sheet = tmp_path / "w", tmp_path / "labels.csv"
    argv = ["data", "add", str(tmp_path / "logs"), "--labels", str(sheet), "--workdir", str(workdir)]
    label_rows(sheet, ids[:4], labels[:4])
    assert main(argv) == 0
    label_rows(sheet, ids[:6], labels[:6])  # the same sheet, two more rows labelled since
    capsys.readouterr()
    assert main(argv) == 0
    assert "left out 4 labelled images already in span 1" in capsys.readouterr().out
    pixels, got, manifest = span_contents(workdir / "data", 2)
    assert manifest["examples"] == 2 and sorted(manifest["request_ids"]) == sorted(ids[4:6])
    np.testing.assert_array_equal(sort_by_pixels(pixels, got)[1], sort_by_pixels(data[4:6], labels[4:6])[1])
    before = sorted((workdir / "data").rglob("*"))
    assert main(argv) == EXIT_BAD_INPUT  # nothing labelled since: nothing to add
    assert "every labelled image is in a span already (spans 1, 2); nothing new to add" in (
        capsys.readouterr().err
    )
    assert sorted((workdir / "data").rglob("*")) == before
    for log in (tmp_path / "logs").glob("*.tfrecord"):
        log.unlink()  # the logs rotate away; the rows added from them stay in the sheet
    new_ids = _log(tmp_path / "logs", data)
    label_rows(sheet, ids[:6] + new_ids[:1], np.concatenate([labels[:6], labels[:1]]))
    assert main(argv) == 0
    assert span_contents(workdir / "data", 3)[2]["request_ids"] == new_ids[:1]
