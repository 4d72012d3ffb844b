"""Drift on the real test images: known shifts are flagged, clean samples are not, inputs are read."""

import gzip
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from core import idx
from core.config import DriftConfig
from core.errors import InputError
from core.vocabulary import MODEL_NAME, NUM_CLASSES
from monitoring.batches import Batch, load_batch
from monitoring.drift import PREDICTED_CLASS, build_reference, check_drift
from monitoring.drift_report import FACETS_FILE, REPORT_FILE, SUMMARY_FILE, write_report
from monitoring.estimated_accuracy import AccuracyEstimate
from monitoring.shifts import SHIFTS

DRIFT = DriftConfig()


def _read(official_dir: Path, name: str, parse) -> np.ndarray:
    return parse(gzip.decompress((official_dir / f"{name}.gz").read_bytes()), name)


def perfect_answers(labels: np.ndarray) -> np.ndarray:
    """The probabilities a perfect classifier would log: the model-output features without a model."""
    return np.eye(NUM_CLASSES, dtype=np.float32)[labels]


@pytest.fixture(scope="module")
def data(official_dir: Path) -> dict:
    """Training images as the reference; test images (never in it) for the batches."""
    train = _read(official_dir, "train-images-idx3-ubyte", idx.parse_images)
    test = _read(official_dir, "t10k-images-idx3-ubyte", idx.parse_images)
    labels = _read(official_dir, "t10k-labels-idx1-ubyte", idx.parse_labels)
    answers = {image.tobytes(): label for image, label in zip(test[:5000], labels[:5000], strict=True)}

    def oracle(images: np.ndarray) -> np.ndarray:  # perfect on the held-out images of the reference
        return perfect_answers(np.array([answers[i.tobytes()] for i in images]))

    reference = build_reference(train[:20000], test[:5000], oracle, DRIFT, "training images 0..19,999")
    return {"reference": reference, "test": test[5000:], "labels": labels[5000:]}


def batch_of(images: np.ndarray, labels: np.ndarray, source: str) -> Batch:
    return Batch(images, source, probabilities=perfect_answers(labels))


@pytest.mark.parametrize("shift", sorted(SHIFTS))
def test_every_known_shift_of_1000_images_is_flagged(data: dict, shift: str):
    images, labels = SHIFTS[shift](data["test"][:1000], data["labels"][:1000])
    result = check_drift(batch_of(images, labels, shift), data["reference"], DRIFT, None)
    assert result.drifted, [(f.feature, f.distance, f.threshold) for f in result.features[:3]]
    if "class" in shift:
        assert PREDICTED_CLASS in [f.feature for f in result.drifted_features]


@pytest.mark.parametrize("size", [200, 500, 2000])
def test_clean_samples_are_not_flagged(data: dict, size: int):
    rng = np.random.default_rng(size)
    for _ in range(3):
        chosen = rng.choice(len(data["test"]), size, replace=False)
        result = check_drift(
            batch_of(data["test"][chosen], data["labels"][chosen], "clean"), data["reference"], DRIFT, None
        )
        assert not result.drifted, [(f.feature, f.distance, f.threshold) for f in result.drifted_features]


def test_too_small_a_batch_is_refused(data: dict):
    with pytest.raises(InputError, match="tiny.npy: 10 images; at least 50 are needed"):
        check_drift(Batch(data["test"][:10], "tiny.npy"), data["reference"], DRIFT, None)


def test_the_report_has_verdict_table_pictures_and_the_tfdv_view(data: dict, tmp_path: Path):
    darker, labels = SHIFTS["darker (x0.7)"](data["test"][:500], data["labels"][:500])
    result = check_drift(batch_of(darker, labels, "darker.npy"), data["reference"], DRIFT, None)
    not_estimated = AccuracyEstimate(None, why_not="no model in this test")
    paths = write_report(result, data["reference"], "darker.npy", str(tmp_path), not_estimated)
    page = Path(paths[REPORT_FILE]).read_text()
    assert "DRIFT:" in page and "darker.npy" in page and page.count("data:image/png;base64,") >= 3
    assert "Jensen-Shannon divergence" in page and FACETS_FILE in page
    summary = __import__("json").loads(Path(paths[SUMMARY_FILE]).read_text())
    assert (
        summary["verdict"] == "drift"
        and "mean_intensity" in summary["drifted_features"]
        or summary["drifted"]
    )
    assert "facets" in Path(paths[FACETS_FILE]).read_text().lower()


def _write_request_log(directory: Path, images: np.ndarray) -> None:
    from serving.request_log import RequestLogger

    logger = RequestLogger(str(directory))
    for i in range(0, len(images), 25):
        request = predict_pb2.PredictRequest()
        request.inputs["images"].CopyFrom(tf.make_tensor_proto(images[i : i + 25]))
        response = predict_pb2.PredictResponse()
        response.model_spec.name = MODEL_NAME
        response.model_spec.version.value = 7
        probabilities = np.full((len(images[i : i + 25]), NUM_CLASSES), 0.1, np.float32)
        response.outputs["probabilities"].CopyFrom(tf.make_tensor_proto(probabilities))
        logger.log_predict(request, response)
    logger.close()


def test_every_input_format_is_read(data: dict, tmp_path: Path, official_dir: Path, slice_data: Path):
    from PIL import Image

    images = data["test"][:100]
    _write_request_log(tmp_path / "logs", images)
    logged = load_batch(str(tmp_path / "logs"))
    np.testing.assert_array_equal(logged.images, images)
    assert logged.probabilities.shape == (100, NUM_CLASSES)
    np.save(tmp_path / "batch.npy", images)
    np.testing.assert_array_equal(load_batch(str(tmp_path / "batch.npy")).images, images)
    (tmp_path / "pngs").mkdir()
    for i in range(3):
        Image.fromarray(images[i]).save(tmp_path / "pngs" / f"{i}.png")
    np.testing.assert_array_equal(load_batch(str(tmp_path / "pngs")).images, images[:3])
    assert load_batch(str(official_dir / "t10k-images-idx3-ubyte.gz")).images.shape == (10000, 28, 28)
    assert load_batch(str(slice_data / "test")).images.shape == (300, 28, 28)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing", "missing: no such file or directory"),
        (
            lambda d: (d / "empty").mkdir() or d / "empty",
            "empty: holds no request logs, TFRecords of examples",
        ),
        (lambda d: (d / "junk.tfrecord").write_bytes(b"\x00junk") and d / "junk.tfrecord", "junk.tfrecord"),
        (lambda d: np.save(d / "none.npy", np.zeros((0, 28, 28), np.uint8)) or d / "none.npy", "none.npy"),
    ],
)
def test_unreadable_or_empty_input_names_the_path(tmp_path: Path, make, message: str):
    with pytest.raises(InputError, match=message):
        load_batch(str(make(tmp_path)))
