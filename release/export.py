"""What TF Serving needs in an exported SavedModel beyond what Keras writes.

TF2's `tf.saved_model.save` marks every signature with the Predict method.
TF Serving's `Classify` RPC accepts only a signature whose `method_name` is
`tensorflow/serving/classify` (with input `inputs`, serialized `tf.Example`s,
and outputs `classes` and/or `scores`), so the exporter re-marks that signature
in `saved_model.pb`. Loading ignores `method_name`, so nothing else changes
but the SavedModel's `fingerprint.pb`, whose checksum of `saved_model.pb`
TensorFlow's own fingerprinting then writes again.
"""

from __future__ import annotations

import os
import uuid

import tensorflow as tf
from tensorflow.python.saved_model import fingerprinting_utils

from core.vocabulary import (
    CLASSES_OUTPUT,
    CLASSIFY_INPUT,
    CLASSIFY_METHOD,
    SAVED_MODEL_FILE,
    SCORES_OUTPUT,
)
from serving.version_files import read_saved_model


def mark_classify_method(export_dir: str, signature_name: str) -> None:
    """Set `signature_name`'s method to Classify in `export_dir/saved_model.pb`, atomically."""
    path = os.path.join(export_dir, SAVED_MODEL_FILE)
    saved_model = read_saved_model(export_dir)
    signatures = saved_model.meta_graphs[0].signature_def
    if signature_name not in signatures:
        raise ValueError(f"{path}: no signature '{signature_name}' to mark as Classify")
    signature = signatures[signature_name]
    if CLASSIFY_INPUT not in signature.inputs or not {CLASSES_OUTPUT, SCORES_OUTPUT} & set(signature.outputs):
        raise ValueError(
            f"{path}: signature '{signature_name}' needs input '{CLASSIFY_INPUT}' and output "
            f"'{CLASSES_OUTPUT}' or '{SCORES_OUTPUT}' for Classify"
        )
    signature.method_name = CLASSIFY_METHOD
    staging = os.path.join(export_dir, f".{SAVED_MODEL_FILE}.{uuid.uuid4().hex[:8]}")
    with tf.io.gfile.GFile(staging, "wb") as f:
        f.write(saved_model.SerializeToString())
    tf.io.gfile.rename(staging, path, overwrite=True)
    fingerprinting_utils.write_fingerprint(export_dir)  # its saved_model_checksum covers the new file
