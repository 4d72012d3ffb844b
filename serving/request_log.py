"""Request logs in TF Serving's format: sampled `PredictionLog` records in rotating TFRecord files.

TF Serving's request logger writes the same records (in builds that register a
log collector; the stock Docker image has none, see the README), so the drift
report and `fmnist data add` read the logs of this server, of such a TF
Serving, or of the log proxy alike.

Writing never costs a request its answer: a record that cannot be written
(full disk, deleted or read-only directory) is dropped and counted, the file is
closed, and the next record opens a new file in a re-created directory, so
logging recovers by itself once the directory is writable again.

Reading takes what is valid: a record cut short by a killed writer, a record
that is not a PredictionLog, a request for another model (or version) are
skipped and counted by reason, never a reason to discard the rest.

What a record may claim is bounded by what it holds. TensorFlow reads a
TensorProto with fewer values than its shape has elements by repeating the
last value, so a 40-byte record declaring [2000000, 28, 28] would expand to
1.5 GB and two million images. A logged tensor is read only when it carries
exactly one value per element it declares (checked from its header, before
anything is expanded), and a record yields at most `MAX_IMAGES_PER_RECORD`
images; any other record is skipped and counted.

Each logged image has a request id, `<log file name>:<record>:<image>`,
stable for as long as the file exists: `fmnist data requests` exports the
images under those ids for labelling, and `fmnist data add` joins the labels.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import math
import os
import random
import threading
import time

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import classification_pb2, predict_pb2, prediction_log_pb2

from core.errors import InputError
from core.examples import checked_images, parse_example_pixels
from core.image_files import pixels_from_array
from core.vocabulary import EXAMPLES_INPUT, IMAGES_INPUT, PROBABILITIES_OUTPUT

log = logging.getLogger(__name__)
LOG_SUFFIX = ".tfrecord"
ERROR_REPORT_EVERY = 1000  # after the first failed write, one log line per this many more
# More than a 64 MB request (the server's default message limit) can carry at one byte per pixel
# (85,598), so no record a server accepted by default is cut; a record claiming more is skipped.
MAX_IMAGES_PER_RECORD = 100_000
SHORTHAND_SKIP = "a tensor whose values do not match its declared shape"


class RequestLogger:
    """Thread-safe, sampled writer of request/response pairs; never raises on a failed write."""

    def __init__(
        self,
        directory: str,
        sampling_rate: float = 1.0,
        records_per_file: int = 10_000,
        prefix: str = "prediction_log",
        max_bytes: int = 0,
        max_age_seconds: float = 0.0,
    ):
        if not 0.0 <= sampling_rate <= 1.0:
            raise ValueError(f"sampling rate must be in [0, 1], got {sampling_rate}")
        self.directory = directory
        self.sampling_rate = sampling_rate
        self.records_per_file = records_per_file
        self.prefix = prefix
        self.max_bytes = max_bytes
        self.max_age_seconds = max_age_seconds
        self.pruned = 0
        self.written = 0
        self.dropped: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._writer: tf.io.TFRecordWriter | None = None
        self._path = ""
        self._in_file = 0
        self._files = 0

    def log_predict(self, request: predict_pb2.PredictRequest, response: predict_pb2.PredictResponse) -> bool:
        """Log one Predict exchange if sampled; return whether it was written."""
        record = prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request, response=response)
        )
        return self._log(record, response.model_spec)

    def log_classify(
        self,
        request: classification_pb2.ClassificationRequest,
        response: classification_pb2.ClassificationResponse,
    ) -> bool:
        """Log one Classify exchange if sampled; return whether it was written."""
        record = prediction_log_pb2.PredictionLog(
            classify_log=prediction_log_pb2.ClassifyLog(request=request, response=response)
        )
        return self._log(record, response.model_spec)

    def _log(self, record: prediction_log_pb2.PredictionLog, model_spec) -> bool:
        if self.sampling_rate < 1.0 and random.random() >= self.sampling_rate:
            return False
        record.log_metadata.model_spec.CopyFrom(model_spec)
        record.log_metadata.timestamp_secs = int(time.time())
        data = record.SerializeToString()
        with self._lock:
            try:
                if (
                    self._writer is None
                    or self._in_file >= self.records_per_file
                    or not os.path.exists(self._path)
                ):
                    self._rotate()
                self._writer.write(data)
                self._writer.flush()
            except (OSError, tf.errors.OpError) as err:
                self._drop(err)
                return False
            self._in_file += 1
            self.written += 1
        return True

    def _drop(self, err: Exception) -> None:
        """Count a record that could not be written, and start a new file next time."""
        reason = getattr(err, "strerror", None) or getattr(err, "message", None) or type(err).__name__
        self.dropped[str(reason)] += 1
        total = sum(self.dropped.values())
        if total == 1 or total % ERROR_REPORT_EVERY == 0:
            log.error(
                "request log %s: %d record(s) dropped so far (%s); serving goes on",
                self.directory,
                total,
                reason,
            )
        self._close_quietly()

    def _rotate(self) -> None:
        self._close_quietly()
        self._prune()
        os.makedirs(self.directory, exist_ok=True)
        self._files += 1
        name = f"{self.prefix}-{int(time.time() * 1000)}-{self._files:05d}{LOG_SUFFIX}"
        self._path = os.path.join(self.directory, name)
        self._writer = tf.io.TFRecordWriter(self._path)
        self._in_file = 0

    def _prune(self) -> None:
        """Delete this logger's oldest closed files beyond the size and age caps (none: nothing to do).

        Only files with this logger's prefix are touched; a file that cannot be
        listed or deleted is left for the next rotation: logging never fails a
        request, and neither does its clean-up.
        """
        if not (self.max_bytes or self.max_age_seconds):
            return
        try:
            names = sorted(
                n for n in os.listdir(self.directory) if n.startswith(self.prefix) and n.endswith(LOG_SUFFIX)
            )
            files = [
                (os.path.join(self.directory, n), os.stat(os.path.join(self.directory, n))) for n in names
            ]
        except OSError:
            return
        total, now = sum(stat.st_size for _, stat in files), time.time()
        for path, stat in files:  # oldest first: the names start with the time they were opened
            too_old = self.max_age_seconds and now - stat.st_mtime > self.max_age_seconds
            if not too_old and not (self.max_bytes and total > self.max_bytes):
                continue
            with contextlib.suppress(OSError):
                os.remove(path)
                total -= stat.st_size
                self.pruned += 1

    def _close_quietly(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            # On a failing disk closing fails too; what the file held is already counted.
            with contextlib.suppress(OSError, tf.errors.OpError):
                writer.close()

    def stats(self) -> dict[str, object]:
        with self._lock:
            return {"written": self.written, "dropped": dict(self.dropped)}

    def summary(self) -> str:
        """One line for the end of a run: where the log went, how much was written and dropped."""
        stats = self.stats()
        dropped = sum(stats["dropped"].values())
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(stats["dropped"].items()))
        return f"request log {self.directory}: {stats['written']} written, {dropped} dropped" + (
            f" ({reasons})" if reasons else ""
        )

    def close(self) -> None:
        with self._lock:
            self._close_quietly()


# --- reading ------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LoggedRequest:
    """The images of one logged request, the model's answers when logged, and what answered."""

    request_id: str  # <log file name>:<record>
    model_name: str
    version: int | None
    images: np.ndarray  # uint8 [n, 28, 28]
    probabilities: np.ndarray | None  # float [n, 10], when the response carried them
    logged_at: int = 0  # seconds since the epoch (the record's timestamp_secs; 0 when not set)

    def image_ids(self) -> list[str]:
        return [f"{self.request_id}:{i}" for i in range(len(self.images))]


@dataclasses.dataclass
class LogReading:
    requests: list[LoggedRequest]
    skipped: collections.Counter[str]  # reason -> records skipped

    def skipped_text(self) -> str:
        return ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items())) or "none"


class UnreadRecordError(Exception):
    """A record that is not read; the message is the reason it is counted under."""


def _carried(proto: tensor_pb2.TensorProto) -> int | None:
    """How many values a tensor holds: its raw content, or its typed `*_val` list (one of them is used).

    None when the raw content is no whole number of values (or its dtype, a string, has no fixed size).
    """
    if proto.tensor_content:
        size = tf.as_dtype(proto.dtype).size
        whole = size and len(proto.tensor_content) % size == 0
        return len(proto.tensor_content) // size if whole else None
    return sum(len(values) for field, values in proto.ListFields() if field.name.endswith("_val"))


def _logged_array(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """A logged tensor as an array, refused from its header unless it is whole and within the cap.

    `UnreadRecordError` when it does not carry one value per declared element,
    or its first dimension exceeds `MAX_IMAGES_PER_RECORD`: nothing is
    expanded before both are known.
    """
    if proto.tensor_shape.unknown_rank or any(d.size < 0 for d in proto.tensor_shape.dim):
        raise UnreadRecordError("a tensor of unknown or negative shape")
    dims = [d.size for d in proto.tensor_shape.dim]
    if _carried(proto) != math.prod(dims):
        raise UnreadRecordError(SHORTHAND_SKIP)
    if dims and dims[0] > MAX_IMAGES_PER_RECORD:
        raise UnreadRecordError(f"more than {MAX_IMAGES_PER_RECORD} images in one record")
    return tf.make_ndarray(proto)


def _predict_images(request: predict_pb2.PredictRequest, where: str) -> np.ndarray | None:
    if IMAGES_INPUT in request.inputs:
        return pixels_from_array(_logged_array(request.inputs[IMAGES_INPUT]), where)
    if EXAMPLES_INPUT in request.inputs:
        serialized = _logged_array(request.inputs[EXAMPLES_INPUT]).reshape(-1)
        return checked_images(parse_example_pixels(serialized), where)
    return None


def _classify_images(request: classification_pb2.ClassificationRequest, where: str) -> np.ndarray | None:
    kind = request.input.WhichOneof("kind")
    examples = getattr(request.input, kind).examples if kind else []
    if not examples:
        return None
    if len(examples) > MAX_IMAGES_PER_RECORD:
        raise UnreadRecordError(f"more than {MAX_IMAGES_PER_RECORD} images in one record")
    return checked_images(parse_example_pixels([e.SerializeToString() for e in examples]), where)


def _classify_probabilities(response: classification_pb2.ClassificationResponse) -> np.ndarray | None:
    rows = [[c.score for c in result.classes] for result in response.result.classifications]
    return np.array(rows, dtype=np.float32) if rows else None


def _logged_request(log_record: prediction_log_pb2.PredictionLog, request_id: str) -> LoggedRequest | None:
    """The images and answers of one record; None when it holds no images of this project's format."""
    kind = log_record.WhichOneof("log_type")
    spec = log_record.log_metadata.model_spec
    if kind == "predict_log":
        images = _predict_images(log_record.predict_log.request, request_id)
        outputs = log_record.predict_log.response.outputs
        probabilities = (
            _logged_array(outputs[PROBABILITIES_OUTPUT]) if PROBABILITIES_OUTPUT in outputs else None
        )
        spec = spec if spec.name else log_record.predict_log.request.model_spec
    elif kind == "classify_log":
        images = _classify_images(log_record.classify_log.request, request_id)
        probabilities = _classify_probabilities(log_record.classify_log.response)
        spec = spec if spec.name else log_record.classify_log.request.model_spec
    else:
        return None
    if images is None:
        return None
    if probabilities is not None:
        probabilities = (
            probabilities.reshape(len(images), -1) if probabilities.size % len(images) == 0 else None
        )
    version = spec.version.value if spec.HasField("version") else None
    stamp = log_record.log_metadata.timestamp_secs
    return LoggedRequest(request_id, spec.name, version, images, probabilities, stamp)


def _records(file: str, skipped: collections.Counter):
    """(index, bytes) of each readable record; a damaged tail is counted, not raised."""
    try:
        for index, record in enumerate(tf.data.TFRecordDataset(file)):
            yield index, record.numpy()
    except tf.errors.OpError:
        skipped["truncated or corrupt record (the rest of its file)"] += 1


def read_request_logs(
    files: list[str], model_name: str | None = None, version: int | None = None
) -> LogReading:
    """Every logged request with images in `files`, for `model_name` (and `version`) when given."""
    requests, skipped = [], collections.Counter()
    for file in files:
        for index, data in _records(file, skipped):
            request_id = f"{os.path.basename(file)}:{index}"
            try:
                logged = _logged_request(prediction_log_pb2.PredictionLog.FromString(data), request_id)
            except UnreadRecordError as skip:
                skipped[str(skip)] += 1
                continue
            except (InputError, ValueError, TypeError, tf.errors.OpError):
                # DecodeError is a ValueError: not a PredictionLog, or images outside the project's format
                skipped["not a request of this project's images"] += 1
                continue
            if logged is None:
                skipped["no images in the request"] += 1
            elif model_name is not None and logged.model_name != model_name:
                skipped[f"for another model ({logged.model_name or 'unnamed'})"] += 1
            elif version is not None and logged.version != version:
                skipped[f"answered by another version ({logged.version})"] += 1
            else:
                requests.append(logged)
    return LogReading(requests, skipped)


def is_request_log(file: str) -> bool:
    """A TFRecord file whose first record parses as a PredictionLog with a request in it."""
    try:
        first = next(iter(tf.data.TFRecordDataset(file).take(1)), None)
    except tf.errors.OpError:
        return False
    if first is None:
        return False
    try:
        return prediction_log_pb2.PredictionLog.FromString(first.numpy()).WhichOneof("log_type") is not None
    except ValueError:  # protobuf's DecodeError: some other record type
        return False
