"""The CNN builder and the trainer's helpers, on real images."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from components.model import build_layers, build_model
from components.trainer import make_dataset, training_config_from, warm_start_from
from core.config import TrainingConfig
from core.vocabulary import NUM_CLASSES, PIXELS, TRANSFORMED_IMAGE_KEY
from tests.components.test_preprocessing import real_batch


def test_model_outputs_probabilities_and_learns(slice_data: Path):
    raw = real_batch(slice_data, n=256)
    images = raw["image"].numpy().astype(np.float32) / 255.0
    labels = raw["label"].numpy().reshape(-1)
    config = TrainingConfig(conv_filters=(8, 16), dense_units=32, random_flip=False, learning_rate=3e-3)
    model = build_model(config, steps_per_epoch=8)

    probabilities = model.predict({TRANSFORMED_IMAGE_KEY: images[:5]}, verbose=0)
    assert probabilities.shape == (5, NUM_CLASSES)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)

    history = model.fit(make_dataset(images, labels, 32, shuffle=True, seed=1), epochs=5, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0] * 0.7
    assert history.history["accuracy"][-1] > 0.5  # far above the 0.1 of chance


def test_model_input_is_the_transformed_image():
    model = build_model(TrainingConfig(conv_filters=(4,), dense_units=8), steps_per_epoch=1)
    assert model.input_names == [TRANSFORMED_IMAGE_KEY]
    assert model.input_shape == (None, PIXELS)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_warm_start_copies_the_served_weights_or_says_why_not(tmp_path: Path, precision: str):
    """As the Trainer exports and restores: a float32-trained model is served as trained, with its
    optimizer; a bfloat16-trained one as a float32 rebuild, which has none. Either way the
    warm-started model learns: its optimizer starts at step 0, not where the served run's ended
    (its cosine schedule had decayed to a learning rate of 0 there)."""
    import tensorflow as tf

    from components.model import build_layers, compile_model, float32_for_serving

    config = TrainingConfig(conv_filters=(4,), dense_units=8, precision=precision)
    trained = build_model(config, steps_per_epoch=1)
    rng = np.random.default_rng(0)
    trained.fit(
        rng.random((32, PIXELS), np.float32), np.arange(32) % NUM_CLASSES, batch_size=4, epochs=3, verbose=0
    )
    served = float32_for_serving(trained, config)
    served.save(str(tmp_path / "served"), save_format="tf")
    fresh = build_layers(config, planned_steps=4)
    pairs = list(zip(fresh.get_weights(), served.get_weights(), strict=True))
    assert not all(np.array_equal(a, b) for a, b in pairs)  # initialised apart
    assert warm_start_from(fresh, str(tmp_path / "served"), lambda: build_layers(config, 4)) is None
    for got, want in zip(fresh.get_weights(), served.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    images = tf.random.uniform([3, PIXELS])
    np.testing.assert_allclose(fresh(images, training=False), served(images, training=False), atol=0.02)
    compile_model(fresh, config, steps_per_epoch=2, epochs=2)
    before = [weight.numpy().copy() for weight in fresh.trainable_weights]
    fresh.fit(
        tf.random.uniform([8, PIXELS]), tf.constant([0, 1, 2, 3] * 2), batch_size=4, epochs=1, verbose=0
    )
    assert int(fresh.optimizer.iterations) == 2  # its own steps only
    assert any(not np.array_equal(a, b.numpy()) for a, b in zip(before, fresh.trainable_weights, strict=True))

    wider_config = TrainingConfig(conv_filters=(8,), dense_units=8, precision=precision)
    wider = build_layers(wider_config, 4)
    assert "architecture differs" in warm_start_from(
        wider, str(tmp_path / "served"), lambda: build_layers(wider_config, 4)
    )


def test_training_config_round_trips_and_rejects_unknown_fields():
    config = TrainingConfig(epochs=3, conv_filters=(16, 32))
    assert training_config_from({"training": dataclasses.asdict(config)}) == config
    with pytest.raises(ValueError, match=r"unknown fields \['epoch'\]"):
        training_config_from({"training": {"epoch": 3}})


def test_bfloat16_model_keeps_float32_outputs_and_does_not_leak_its_policy():
    import tensorflow as tf

    model = build_model(
        TrainingConfig(conv_filters=(4,), dense_units=8, precision="bfloat16"), steps_per_epoch=1
    )
    from components.model import layers_of

    (output,) = (layer for layer in layers_of(model) if getattr(layer, "units", None) == NUM_CLASSES)
    assert output.dtype_policy.compute_dtype == "float32"
    assert any(layer.dtype_policy.compute_dtype == "bfloat16" for layer in layers_of(model))
    out = model({TRANSFORMED_IMAGE_KEY: tf.zeros([2, PIXELS])}, training=False)
    assert out.dtype == tf.float32
    assert tf.keras.mixed_precision.global_policy().name == "float32"


def test_the_served_copy_of_a_bfloat16_model_is_float32_with_the_same_answers():
    import numpy as np
    import tensorflow as tf

    from components.model import float32_for_serving, layers_of

    config = TrainingConfig(conv_filters=(4,), dense_units=8, precision="bfloat16")
    trained = build_model(config, steps_per_epoch=1)
    served = float32_for_serving(trained, config)
    assert all(layer.dtype_policy.compute_dtype == "float32" for layer in layers_of(served))
    images = {TRANSFORMED_IMAGE_KEY: tf.random.stateless_uniform([8, PIXELS], seed=(1, 2))}
    np.testing.assert_allclose(served(images, training=False), trained(images, training=False), atol=0.02)
    float32 = build_model(TrainingConfig(conv_filters=(4,), dense_units=8, precision="float32"), 1)
    assert float32_for_serving(float32, config) is float32  # nothing to convert


def test_precision_auto_follows_the_cpu_flags(tmp_path: Path):
    from components.model import cpu_has_bfloat16, resolve_precision

    with_bf16 = tmp_path / "bf16"
    with_bf16.write_text("flags\t\t: fpu sse avx512f avx512_bf16 amx_tile\n")
    without = tmp_path / "plain"
    without.write_text("flags\t\t: fpu sse avx2\n")
    assert cpu_has_bfloat16(str(with_bf16)) is True
    assert cpu_has_bfloat16(str(without)) is False
    assert cpu_has_bfloat16(str(tmp_path / "missing")) is False
    assert resolve_precision("float32") == "float32"


def test_flip_averaging_answers_the_same_for_an_image_and_its_mirror(slice_data: Path, tmp_path: Path):
    """The served model averages over both orientations, so a mirrored garment gets the same answer."""
    import tensorflow as tf

    from components.model import FlipAveraging

    images = real_batch(slice_data, n=8)["image"].numpy().astype(np.float32) / 255.0
    mirrored = images.reshape(-1, 28, 28)[:, :, ::-1].reshape(-1, PIXELS)
    config = TrainingConfig(conv_filters=(4,), dense_units=8, flip_averaging=True)
    model = build_model(config, steps_per_epoch=1)
    model.fit(make_dataset(images, np.arange(8) % NUM_CLASSES, 4, shuffle=True, seed=1), epochs=1, verbose=0)

    got = model.predict(images, verbose=0)
    np.testing.assert_allclose(got, model.predict(mirrored, verbose=0), atol=1e-5)
    (averaging,) = (layer for layer in model.layers if isinstance(layer, FlipAveraging))
    single_view = averaging.backbone.predict(images.reshape(-1, 28, 28, 1), verbose=0)
    mirror_view = averaging.backbone.predict(mirrored.reshape(-1, 28, 28, 1), verbose=0)
    np.testing.assert_allclose(got, (single_view + mirror_view) / 2, atol=1e-5)
    assert not np.allclose(single_view, mirror_view, atol=1e-5)  # the network alone is not symmetric

    model.save(str(tmp_path / "served"), save_format="tf")  # and a warm start can take its weights
    fresh = build_layers(config, planned_steps=1)
    assert warm_start_from(fresh, str(tmp_path / "served"), lambda: build_layers(config, 1)) is None
    np.testing.assert_allclose(fresh(tf.constant(images), training=False), got, atol=1e-5)
    single_config = dataclasses.replace(config, flip_averaging=False)
    single = build_layers(single_config, planned_steps=1)
    assert "architecture differs" in warm_start_from(
        single, str(tmp_path / "served"), lambda: build_layers(single_config, 1)
    )


def test_batch_norm_follows_the_weights_sooner_in_a_short_training_run():
    """Auto momentum: 0.9 when a run has fewer than 1,000 steps (a 10,000-image day), else 0.99."""
    from components.model import batch_norm_momentum, layers_of

    auto = TrainingConfig(conv_filters=(4,), dense_units=8)
    assert batch_norm_momentum(auto, planned_steps=36 * 12) == 0.9
    assert batch_norm_momentum(auto, planned_steps=212 * 12) == 0.99
    assert batch_norm_momentum(dataclasses.replace(auto, batch_norm_momentum=0.95), 36) == 0.95
    short = build_model(auto, steps_per_epoch=36)
    momenta = {layer.momentum for layer in layers_of(short) if hasattr(layer, "moving_mean")}
    assert momenta == {0.9}
    long = build_model(auto, steps_per_epoch=212)
    assert {layer.momentum for layer in layers_of(long) if hasattr(layer, "moving_mean")} == {0.99}


def test_building_and_training_the_model_leaves_keras_code_unconverted(monkeypatch):
    """AutoGraph converts only the tf.functions Keras makes, not the Keras code they call.

    Before, TensorFlow 2.16 transpiled tf_keras's own Python (it spares only
    the `keras` package): 420 functions to build this model and 1,142 in a
    small model's first epoch, 27.6 s of a small-loop Trainer's 46.8 s.
    """
    from tensorflow.python.autograph.pyct import transpiler

    converted = []
    original = transpiler.PyToPy.transform_function

    def counting(self, fn, *args, **kwargs):
        converted.append(f"{fn.__module__}:{fn.__qualname__}")
        return original(self, fn, *args, **kwargs)

    monkeypatch.setattr(transpiler.PyToPy, "transform_function", counting)
    config = TrainingConfig(conv_filters=(4,), dense_units=8, random_erasing=0.5, flip_averaging=True)
    model = build_model(config, steps_per_epoch=1)
    assert converted == []

    images, labels = np.zeros((8, PIXELS), np.float32), np.arange(8) % NUM_CLASSES
    model.fit(images, labels, epochs=1, validation_data=(images, labels), verbose=0)
    entry_points = ("Model.make_train_function.<locals>.train_function",
                    "Model.make_test_function.<locals>.test_function")  # fmt: skip
    assert converted and all(name.endswith(entry_points) for name in converted), converted
