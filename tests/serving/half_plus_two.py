"""TF Serving's own test model, built the way TF Serving builds it: y = 0.5 x + 2.

A port of `tensorflow_serving/servables/tensorflow/testdata/saved_model_half_plus_two.py`
(TF1 graph, `SavedModelBuilder`): variables a=0.5, b=2, c=3 (and a2, c2);
serialized `tf.Example`s with float features `x` and `x2` (default 0);
signatures `serving_default` (Predict: x -> y), `regress_x_to_y`,
`regress_x_to_y2`, `regress_x2_to_y3` (Regress), and `classify_x_to_y`
(Classify, scores only). TF Serving's model-server tests serve it as version
123 of model `default`; this project's tests build it instead of copying the
binary files.
"""

from __future__ import annotations

import tensorflow as tf

v1 = tf.compat.v1


def _feature_spec() -> dict:
    return {
        "x": v1.FixedLenFeature([1], dtype=tf.float32),
        "x2": v1.FixedLenFeature([1], dtype=tf.float32, default_value=[0.0]),
    }


def _signature(inputs: dict, outputs: dict, method: str):
    info = v1.saved_model.utils.build_tensor_info
    return v1.saved_model.signature_def_utils.build_signature_def(
        {k: info(v) for k, v in inputs.items()}, {k: info(v) for k, v in outputs.items()}, method
    )


def build(export_dir: str, b: float = 2.0) -> str:
    """Write the SavedModel to `export_dir` (which must not exist); return it.

    `b=3.0` gives TF Serving's other test model, half_plus_three (y = 0.5 x + 3).
    """
    constants = v1.saved_model.signature_constants
    builder = v1.saved_model.builder.SavedModelBuilder(export_dir)
    with v1.Session(graph=tf.Graph()) as session:
        a, b, c = v1.Variable(0.5, name="a"), v1.Variable(b, name="b"), v1.Variable(b + 1, name="c")
        serialized = v1.placeholder(tf.string, name="tf_example", shape=[None])
        example = v1.parse_example(serialized, _feature_spec())
        x = tf.identity(example["x"], name="x")
        y = tf.identity(tf.add(tf.multiply(a, x), b), name="y")
        y2 = tf.identity(tf.add(tf.multiply(a, x), c), name="y2")
        x2 = tf.identity(example["x2"], name="x2")
        a2, c2 = v1.Variable(0.5, name="a2"), v1.Variable(3.0, name="c2")
        y3 = tf.identity(tf.add(tf.multiply(a2, x2), c2), name="y3")
        regress = constants.REGRESS_METHOD_NAME
        signatures = {
            "regress_x_to_y": _signature(
                {constants.REGRESS_INPUTS: serialized}, {constants.REGRESS_OUTPUTS: y}, regress
            ),
            "regress_x_to_y2": _signature(
                {constants.REGRESS_INPUTS: serialized}, {constants.REGRESS_OUTPUTS: y2}, regress
            ),
            "regress_x2_to_y3": _signature(
                {constants.REGRESS_INPUTS: x2}, {constants.REGRESS_OUTPUTS: y3}, regress
            ),
            "classify_x_to_y": _signature(
                {constants.CLASSIFY_INPUTS: serialized},
                {constants.CLASSIFY_OUTPUT_SCORES: y},
                constants.CLASSIFY_METHOD_NAME,
            ),
            constants.DEFAULT_SERVING_SIGNATURE_DEF_KEY: _signature(
                {"x": x}, {"y": y}, constants.PREDICT_METHOD_NAME
            ),
        }
        session.run(v1.global_variables_initializer())
        builder.add_meta_graph_and_variables(
            session, [v1.saved_model.tag_constants.SERVING], signature_def_map=signatures
        )
    builder.save()
    return export_dir
