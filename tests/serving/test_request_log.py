"""Request logs: a failed write never costs a request its answer; reading keeps what is valid."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import classification_pb2, predict_pb2

from core.vocabulary import MODEL_NAME, NUM_CLASSES
from serving.metrics import ServingMetrics
from serving.request_log import RequestLogger, read_request_logs


def exchange(images: np.ndarray, model: str = MODEL_NAME, version: int = 7):
    request = predict_pb2.PredictRequest()
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(images))
    response = predict_pb2.PredictResponse()
    response.model_spec.name = model
    response.model_spec.version.value = version
    probabilities = np.full((len(images), NUM_CLASSES), 0.1, np.float32)
    response.outputs["probabilities"].CopyFrom(tf.make_tensor_proto(probabilities))
    return request, response


def images(n: int, value: int = 0) -> np.ndarray:
    return np.full((n, 28, 28), value, np.uint8)


def log_files(directory: Path) -> list[str]:
    return sorted(str(p) for p in directory.glob("prediction_log-*.tfrecord"))


def test_a_deleted_log_directory_is_recreated_and_nothing_is_lost(tmp_path: Path):
    directory = tmp_path / "logs"
    logger = RequestLogger(str(directory))
    assert all(logger.log_predict(*exchange(images(1, i))) for i in range(3))
    shutil.rmtree(directory)  # an operator cleans up under a running server
    assert all(logger.log_predict(*exchange(images(1, i))) for i in range(3, 6))
    logger.close()
    reading = read_request_logs(log_files(directory))
    assert [int(r.images.max()) for r in reading.requests] == [3, 4, 5]
    assert logger.stats() == {"written": 6, "dropped": {}}


def test_failed_writes_are_dropped_counted_and_exported_then_logging_recovers(tmp_path: Path):
    directory = tmp_path / "logs"
    directory.write_text("a file where the log directory should be")  # every write fails, as on a bad disk
    logger = RequestLogger(str(directory))
    metrics = ServingMetrics()
    metrics.watch_request_log(logger)
    assert not any(logger.log_predict(*exchange(images(1))) for _ in range(4))  # no exception reaches the RPC
    assert sum(logger.stats()["dropped"].values()) == 4
    directory.unlink()  # the disk is usable again
    assert logger.log_predict(*exchange(images(1)))
    logger.close()
    assert len(read_request_logs(log_files(directory)).requests) == 1
    families = {f.name: f for f in text_string_to_metric_families(metrics.page().decode())}
    samples = {s.labels["outcome"]: s.value for s in families["fmnist_request_log_records"].samples}
    assert samples == {"written": 1.0, "dropped": 4.0}
    assert "1 written, 4 dropped" in logger.summary()


def test_a_truncated_tail_and_other_models_records_are_skipped_not_fatal(tmp_path: Path):
    directory = tmp_path / "logs"
    logger = RequestLogger(str(directory))
    logger.log_predict(*exchange(images(2, 1)))
    logger.log_predict(*exchange(images(2, 2), model="shoes"))
    logger.log_predict(*exchange(images(2, 3), version=8))
    classify = classification_pb2.ClassificationRequest()
    example = classify.input.example_list.examples.add()
    example.features.feature["image"].int64_list.value.extend([4] * 784)
    answer = classification_pb2.ClassificationResponse()
    answer.model_spec.name, answer.model_spec.version.value = MODEL_NAME, 7
    answer.result.classifications.add().classes.add(label="T-shirt/top", score=1.0)
    logger.log_classify(classify, answer)
    logger.close()
    (file,) = log_files(directory)
    with open(file, "ab") as f:  # a writer killed mid-record
        f.write(b"\x40\x00\x00\x00\x00\x00\x00\x00garb")
    reading = read_request_logs([file], model_name=MODEL_NAME, version=7)
    assert [int(r.images.max()) for r in reading.requests] == [1, 4]  # Predict and Classify traffic
    assert reading.skipped == {
        "for another model (shoes)": 1,
        "answered by another version (8)": 1,
        "truncated or corrupt record (the rest of its file)": 1,
    }


def declaring(shape: list[int], dtype=types_pb2.DT_UINT8, **values) -> tensor_pb2.TensorProto:
    """A tensor header claiming `shape`, with only the values given (TensorFlow repeats the last one)."""
    proto = tensor_pb2.TensorProto(dtype=dtype, **values)
    proto.tensor_shape.dim.extend(tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in shape)
    return proto


def log_with(directory: Path, name: str, tensor: tensor_pb2.TensorProto) -> list[str]:
    """One good request, then one whose input `name` (or output `probabilities`) is `tensor`."""
    logger = RequestLogger(str(directory))
    logger.log_predict(*exchange(images(1, 9)))
    request, response = exchange(images(1, 9))
    if name == "probabilities":
        response.outputs[name].CopyFrom(tensor)
    else:
        del request.inputs["images"]
        request.inputs[name].CopyFrom(tensor)
    logger.log_predict(request, response)
    logger.close()
    return log_files(directory)


SHORTHAND = "a tensor whose values do not match its declared shape"


@pytest.mark.parametrize(
    ("name", "tensor"),
    [
        ("images", declaring([10**9, 28, 28])),  # 40 bytes claiming 784 GB: MemoryError before
        ("images", declaring([100_000, 28, 28], int_val=[7])),  # 78 MB from one value, 100,000 PNGs before
        ("images", declaring([2, 28, 28], tensor_content=bytes(784))),  # content for one image of two
        ("examples", declaring([1_000_000], types_pb2.DT_STRING, string_val=[b""])),
        ("examples", declaring([1], types_pb2.DT_STRING, tensor_content=b"x")),  # strings have no size
        ("images", declaring([1, 28, 28], tensor_content=bytes(785))),  # one byte too many
        ("probabilities", declaring([10**9, 10], types_pb2.DT_FLOAT)),  # the answer, too
    ],
    ids=[
        "no-values",
        "one-value",
        "short-content",
        "one-example-repeated",
        "string-content",
        "long-content",
        "probabilities",
    ],
)
def test_a_record_whose_values_do_not_match_its_shape_is_skipped_and_counted(tmp_path: Path, name, tensor):
    files = log_with(tmp_path / "logs", name, tensor)
    assert os.path.getsize(files[0]) < 10_000  # a few bytes claim up to gigabytes
    reading = read_request_logs(files)
    assert [int(r.images.max()) for r in reading.requests] == [9]  # the good record is kept
    assert reading.skipped == {SHORTHAND: 1}


def test_a_record_with_more_images_than_one_record_may_hold_is_skipped(tmp_path: Path, monkeypatch):
    import serving.request_log

    monkeypatch.setattr(serving.request_log, "MAX_IMAGES_PER_RECORD", 3)
    logger = RequestLogger(str(tmp_path / "logs"))
    for count in (3, 4):  # whole tensors: every value is there
        logger.log_predict(*exchange(images(count, count)))
    classify = classification_pb2.ClassificationRequest()
    for _ in range(4):
        classify.input.example_list.examples.add().features.feature["image"].int64_list.value.extend(
            [5] * 784
        )
    answer = classification_pb2.ClassificationResponse()
    answer.model_spec.name = MODEL_NAME
    logger.log_classify(classify, answer)
    logger.close()
    reading = read_request_logs(log_files(tmp_path / "logs"))
    assert [len(r.images) for r in reading.requests] == [3]
    assert reading.skipped == {"more than 3 images in one record": 2}


def test_request_logs_are_capped_in_size_and_age_oldest_first_and_only_their_own_files(tmp_path: Path):
    directory = tmp_path / "logs"
    directory.mkdir()
    (directory / "notes.txt").write_text("a person's file beside the logs")
    record_bytes = len(exchange(images(1))[0].SerializeToString()) + len(
        exchange(images(1))[1].SerializeToString()
    )
    logger = RequestLogger(
        str(directory), records_per_file=2, max_bytes=5 * record_bytes, max_age_seconds=3600
    )
    for i in range(20):  # ten files of two records
        assert logger.log_predict(*exchange(images(1, i)))
    logger.close()
    files = log_files(directory)
    assert 1 < len(files) < 10 and logger.pruned == 10 - len(files)
    kept = read_request_logs(files)
    assert [int(r.images.max()) for r in kept.requests][-1] == 19  # the newest stay; the oldest went
    assert (directory / "notes.txt").exists()
    old = Path(files[-1])
    os.utime(old, (1, 1))  # a file from 1970: past the age cap at the next rotation
    logger = RequestLogger(str(directory), records_per_file=2, max_age_seconds=3600)
    assert logger.log_predict(*exchange(images(1, 99)))
    logger.close()
    assert not old.exists()
