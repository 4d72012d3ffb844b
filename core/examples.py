"""The project's `tf.train.Example` format, both ways: `image` (784 int64 pixels, 0..255), `label` (int64).

One encoder and one decoder for every reader and writer: data preparation and
new spans, the serving check, request logs and the drift report. Paths are
strings read through `tf.io.gfile`, so any TensorFlow filesystem works.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
import tensorflow as tf

from core.errors import InputError
from core.vocabulary import IMAGE_HEIGHT, IMAGE_KEY, IMAGE_WIDTH, LABEL_KEY, MAX_PIXEL, PIXELS

PARSE_BATCH = 4096


def serialize_example(image: np.ndarray, label: int | None = None) -> bytes:
    """One serialized example: `image` as 784 int64 pixels and, when given, `label` as int64."""
    feature = {IMAGE_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=image.reshape(-1).tolist()))}
    if label is not None:
        feature[LABEL_KEY] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def shard_names(count: int) -> list[str]:
    """TFRecord file names of `count` shards, as `fmnist data prepare` writes them."""
    return [f"data-{i:05d}-of-{count:05d}.tfrecord.gz" for i in range(count)]


def write_tfrecords(
    images: np.ndarray, labels: np.ndarray, out_dir: str, shards: int, progress: Iterable[int] | None = None
) -> list[str]:
    """Write examples round-robin into `shards` GZIP files under `out_dir`; return their paths.

    Several files let Beam read in parallel. `progress` wraps the index range
    (a tqdm bar on the command line).
    """
    tf.io.gfile.makedirs(out_dir)
    shards = max(1, min(shards, len(images)))
    paths = [os.path.join(out_dir, name) for name in shard_names(shards)]
    writers = [tf.io.TFRecordWriter(path, options="GZIP") for path in paths]
    try:
        for i in progress if progress is not None else range(len(images)):
            writers[i % shards].write(serialize_example(images[i], labels[i]))
    finally:
        for writer in writers:
            writer.close()
    return paths


def parse_example_pixels(serialized) -> np.ndarray:
    """The `image` pixels (int64 [n, 784], unchecked) of serialized examples of the project's format."""
    spec = {IMAGE_KEY: tf.io.FixedLenFeature([PIXELS], tf.int64)}
    return tf.io.parse_example(serialized, spec)[IMAGE_KEY].numpy()


def compression_of(path: str) -> str:
    """TFRecord compression by name: GZIP for `.gz` files, none otherwise."""
    return "GZIP" if path.lower().endswith(".gz") else ""


def read_serialized(files: list[str], count: int | None = None) -> list[bytes]:
    """Up to `count` (default all) serialized records of TFRecord files, in file order."""
    records = []
    for file in files:
        for record in tf.data.TFRecordDataset(file, compression_of(file)):
            records.append(record.numpy())
            if count is not None and len(records) >= count:
                return records
    return records


def read_example_images(files: list[str]) -> np.ndarray:
    """The `image` of every example in TFRecord files of the project's examples, as uint8 [n, 28, 28].

    Works for any TFRecords with the same `image` feature (ExampleGen's output
    included); errors name the file.
    """
    parts = []
    for file in files:
        try:
            for batch in tf.data.TFRecordDataset(file, compression_of(file)).batch(PARSE_BATCH):
                parts.append(parse_example_pixels(batch))
        except tf.errors.OpError as err:
            raise InputError(
                f"{file}: not TFRecords of examples with a 784-pixel 'image': {err.message}"
            ) from err
    if not parts:
        raise InputError(f"{', '.join(files) or 'no files'}: hold no examples")
    return checked_images(np.concatenate(parts), files[0])


def read_labelled_images(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Images (uint8 [n, 28, 28]) and labels (int64 [n]) of every example in TFRecord files."""
    spec = {
        IMAGE_KEY: tf.io.FixedLenFeature([PIXELS], tf.int64),
        LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
    }
    pixels, labels = [], []
    for file in files:
        try:
            for batch in tf.data.TFRecordDataset(file, compression_of(file)).batch(PARSE_BATCH):
                parsed = tf.io.parse_example(batch, spec)
                pixels.append(parsed[IMAGE_KEY].numpy())
                labels.append(parsed[LABEL_KEY].numpy())
        except tf.errors.OpError as err:
            raise InputError(f"{file}: not TFRecords of labelled examples: {err.message}") from err
    if not pixels:
        raise InputError(f"{', '.join(files) or 'no files'}: hold no examples")
    return checked_images(np.concatenate(pixels), files[0]), np.concatenate(labels)


def checked_images(pixels: np.ndarray, source: str) -> np.ndarray:
    """uint8 [n, 28, 28] from integer pixel values that must lie in 0..255; `source` names the culprit."""
    if pixels.size and (pixels.min() < 0 or pixels.max() > MAX_PIXEL):
        raise InputError(f"{source}: pixel values outside 0..{MAX_PIXEL}")
    return pixels.astype(np.uint8).reshape(-1, IMAGE_HEIGHT, IMAGE_WIDTH)


def split_files(directory: str) -> list[str]:
    """The data files of one split directory (an ExampleGen `Split-<name>/`), sorted; hidden files skipped."""
    if not tf.io.gfile.isdir(directory):
        raise InputError(f"{directory}: no such split directory (was the pipeline root moved?)")
    names = sorted(n.rstrip("/") for n in tf.io.gfile.listdir(directory))
    files = [os.path.join(directory, n) for n in names if not n.startswith(".")]
    files = [f for f in files if not tf.io.gfile.isdir(f)]
    if not files:
        raise InputError(f"{directory}: no example files")
    return files
