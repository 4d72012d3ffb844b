"""What the exporter changes in a SavedModel for TF Serving: the Classify method, and its fingerprint."""

from pathlib import Path

import tensorflow as tf
from tensorflow.core.protobuf import fingerprint_pb2
from tensorflow.python.saved_model.pywrap_saved_model import fingerprinting as fingerprinting_pywrap

from core.vocabulary import CLASSIFY_METHOD
from release.export import mark_classify_method
from serving.version_files import read_saved_model


class Scores(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify(self, serialized):
        return {"scores": tf.ones([tf.shape(serialized)[0], 2])}


def test_the_classify_signature_is_re_marked_and_the_fingerprint_still_matches(tmp_path: Path):
    export = str(tmp_path / "model")
    module = Scores()
    tf.saved_model.save(module, export, signatures={"classify": module.classify.get_concrete_function()})
    before = tf.saved_model.experimental.read_fingerprint(export).saved_model_checksum
    mark_classify_method(export, "classify")
    assert read_saved_model(export).meta_graphs[0].signature_def["classify"].method_name == CLASSIFY_METHOD
    stored = tf.saved_model.experimental.read_fingerprint(export).saved_model_checksum
    recomputed = fingerprint_pb2.FingerprintDef.FromString(
        fingerprinting_pywrap.CreateFingerprintDef(export)
    ).saved_model_checksum
    assert stored == recomputed != before  # the stored fingerprint describes the rewritten file
