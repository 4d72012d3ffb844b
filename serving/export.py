"""What TF Serving needs in an exported SavedModel beyond what Keras writes.

TF2's `tf.saved_model.save` marks every signature with the Predict method.
TF Serving's `Classify` RPC accepts only a signature whose `method_name` is
`tensorflow/serving/classify` (with input `inputs`, serialized `tf.Example`s,
and outputs `classes` and `scores`), so the exporter re-marks that signature in
`saved_model.pb`. Loading ignores `method_name`, so nothing else changes.
"""

from __future__ import annotations

import os
import tempfile

from tensorflow.core.protobuf import saved_model_pb2

CLASSIFY_METHOD = "tensorflow/serving/classify"


def mark_classify_method(export_dir: str, signature_name: str) -> None:
    """Set `signature_name`'s method to Classify in `export_dir/saved_model.pb`, atomically."""
    path = os.path.join(export_dir, "saved_model.pb")
    saved_model = saved_model_pb2.SavedModel()
    with open(path, "rb") as f:
        saved_model.ParseFromString(f.read())
    signatures = saved_model.meta_graphs[0].signature_def
    if signature_name not in signatures:
        raise ValueError(f"{path}: no signature '{signature_name}' to mark as Classify")
    signature = signatures[signature_name]
    missing = {"inputs"} - set(signature.inputs) | {"classes", "scores"} - set(signature.outputs)
    if missing:
        raise ValueError(f"{path}: signature '{signature_name}' lacks {sorted(missing)} for Classify")
    signature.method_name = CLASSIFY_METHOD
    handle, staging = tempfile.mkstemp(dir=export_dir, prefix=".saved_model.pb.")
    with os.fdopen(handle, "wb") as f:
        f.write(saved_model.SerializeToString())
    os.replace(staging, path)
