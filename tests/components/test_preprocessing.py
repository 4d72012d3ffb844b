"""preprocessing_fn on real rows: exact scaling, label untouched."""

from pathlib import Path

import numpy as np
import tensorflow as tf

from components.preprocessing import preprocessing_fn
from core.vocabulary import IMAGE_KEY, LABEL_KEY, PIXELS, TRANSFORMED_IMAGE_KEY


def real_batch(data_dir: Path, n: int = 64) -> dict[str, tf.Tensor]:
    spec = {
        IMAGE_KEY: tf.io.FixedLenFeature([PIXELS], tf.int64),
        LABEL_KEY: tf.io.FixedLenFeature([1], tf.int64),
    }
    files = sorted(str(p) for p in data_dir.glob("span-*/*.tfrecord.gz"))  # the training spans
    serialized = next(iter(tf.data.TFRecordDataset(files, "GZIP").batch(n)))
    return tf.io.parse_example(serialized, spec)


def test_scales_pixels_to_unit_range_and_keeps_labels(slice_data: Path):
    raw = real_batch(slice_data)
    out = preprocessing_fn(raw)
    image = out[TRANSFORMED_IMAGE_KEY].numpy()
    assert image.dtype == np.float32 and image.shape == (64, PIXELS)
    np.testing.assert_allclose(image, raw[IMAGE_KEY].numpy() / 255.0, rtol=1e-6)
    assert image.min() == 0.0 and image.max() == 1.0  # real images use the full range
    np.testing.assert_array_equal(out[LABEL_KEY].numpy(), raw[LABEL_KEY].numpy())
