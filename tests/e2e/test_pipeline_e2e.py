"""The whole pipeline on a 300/300 slice of the real data, as a user would notice it.

One module-scoped sequence of runs (each run costs a minute or more):
1. a fresh run executes every component and pushes a version;
2. an unchanged rerun is fully cached and pushes nothing new;
3. a retrained candidate below the accuracy floor is evaluated against the
   blessed baseline, not blessed, and not pushed.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from components.features import CLASS_NAMES, IMAGE_KEY, LABEL_KEY, PIXELS
from pipeline.config import EvaluationConfig, PipelineConfig, TrainingConfig
from pipeline.local_runner import PipelineFailedError, run

pytestmark = pytest.mark.e2e

EXECUTED_NODES = [
    "ImportExampleGen", "ImportSchemaGen", "StatisticsGen", "ExampleValidator", "AnomalyGate",
    "Transform", "Trainer", "previous_blessed_model", "Evaluator", "Pusher",
]  # fmt: skip


def tiny_config(workdir: Path, data_dir: Path, accuracy_floor: float = 0.0) -> PipelineConfig:
    """A few training steps of a small CNN: enough to exercise every component, not to be accurate."""
    return PipelineConfig(
        workdir=str(workdir),
        data_dir=str(data_dir),
        training=TrainingConfig(
            epochs=1, max_steps_per_epoch=5, batch_size=32, conv_filters=(8, 16), dense_units=32
        ),
        evaluation=EvaluationConfig(accuracy_floor=accuracy_floor),
    )


def states(report: dict) -> dict[str, str]:
    return {row["component"]: row["state"] for row in report["components"]}


def snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def runs(slice_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    workdir = tmp_path_factory.mktemp("e2e")
    config = tiny_config(workdir, slice_data)
    first = run(config)
    served_after_first = snapshot(Path(config.serving_dir))
    second = run(config)
    served_after_second = snapshot(Path(config.serving_dir))

    strict = tiny_config(workdir, slice_data, accuracy_floor=0.99)
    strict.training.learning_rate = 1e-2  # a changed recipe: a new candidate is trained
    third = run(strict)
    return {
        "config": config,
        "first": first,
        "second": second,
        "third": third,
        "served_after_first": served_after_first,
        "served_after_second": served_after_second,
        "served_after_third": snapshot(Path(config.serving_dir)),
    }


def test_first_run_executes_every_component_and_pushes_a_version(runs: dict):
    report = runs["first"]
    assert set(states(report)) == set(EXECUTED_NODES)
    assert all(state == "COMPLETE" for state in states(report).values()), states(report)
    model = report["model"]
    assert model["blessed"] is True and model["pushed"] is True
    assert model["examples"] == 300
    assert 0.0 <= model["accuracy"] <= 1.0 and set(model["per_class"]) == set(CLASS_NAMES)
    pushed = Path(model["pushed_path"])
    assert pushed.parent == Path(runs["config"].model_serving_dir)
    assert pushed.name == model["pushed_version"] and pushed.name.isdigit()
    assert (pushed / "saved_model.pb").is_file()
    assert list(runs["served_after_first"]) and all(
        not k.startswith(".tmp") for k in runs["served_after_first"]
    )


def test_pushed_model_answers_both_signatures_consistently(runs: dict, slice_data: Path):
    model = tf.saved_model.load(runs["first"]["model"]["pushed_path"])
    files = sorted(str(p) for p in (slice_data / "test").glob("*.tfrecord.gz"))
    serialized = next(iter(tf.data.TFRecordDataset(files, "GZIP").batch(16)))
    images = tf.io.parse_example(serialized, {IMAGE_KEY: tf.io.FixedLenFeature([PIXELS], tf.int64)})[
        IMAGE_KEY
    ]

    by_example = model.signatures["serving_default"](examples=serialized)["probabilities"].numpy()
    by_pixels = model.signatures["predict_images"](images=tf.cast(tf.reshape(images, [-1, 28, 28]), tf.uint8))
    np.testing.assert_allclose(by_example, by_pixels["probabilities"].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(by_example.sum(axis=1), 1.0, rtol=1e-5)
    ids = by_pixels["class_ids"].numpy()
    np.testing.assert_array_equal(ids, by_example.argmax(axis=1))
    assert [n.decode() for n in by_pixels["class_names"].numpy()] == [CLASS_NAMES[i] for i in ids]


def test_unchanged_rerun_is_fully_cached_and_pushes_nothing(runs: dict):
    report = runs["second"]
    executed = {name: state for name, state in states(report).items() if name != "previous_blessed_model"}
    assert set(executed.values()) == {"CACHED"}, executed
    assert runs["served_after_second"] == runs["served_after_first"]
    assert report["model"]["pushed_version"] == runs["first"]["model"]["pushed_version"]


def test_candidate_below_the_floor_is_neither_blessed_nor_pushed(runs: dict):
    report = runs["third"]
    assert states(report)["Trainer"] == "COMPLETE" and states(report)["Evaluator"] == "COMPLETE"
    assert report["model"]["blessed"] is False and report["model"]["pushed"] is False
    reasons = report["model"]["not_blessed_because"]
    assert any(r.startswith("sparse_categorical_accuracy = ") and "0.99" in r for r in reasons), reasons
    assert runs["served_after_third"] == runs["served_after_first"]  # byte for byte


def write_examples(path: Path, examples: list[tf.train.Example]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
        for example in examples:
            writer.write(example.SerializeToString())


def example(image: list[int], label: int | None) -> tf.train.Example:
    feature = {IMAGE_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=image))}
    if label is not None:
        feature[LABEL_KEY] = tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))
    return tf.train.Example(features=tf.train.Features(feature=feature))


def test_bad_data_stops_the_run_before_transform_and_pushes_nothing(slice_data: Path, tmp_path: Path):
    data = tmp_path / "data"
    shutil.copytree(slice_data, data)
    rows = [example([i % 256] * PIXELS, i % 10) for i in range(40)]
    write_examples(data / "train" / "data-00004-of-00004.tfrecord.gz", [*rows, example([0] * PIXELS, None)])
    write_examples(data / "test" / "data-00001-of-00001.tfrecord.gz", [*rows, example([300] * PIXELS, 3)])
    config = tiny_config(tmp_path, data)

    with pytest.raises(PipelineFailedError) as failure:
        run(config)
    message = str(failure.value)
    assert "stopped before Transform and Trainer" in message
    assert "split 'eval', feature 'image': Out-of-range values" in message
    assert "split 'train', feature 'label'" in message
    ran = states(failure.value.report)
    assert ran["AnomalyGate"] == "FAILED"
    assert "Transform" not in ran and "Trainer" not in ran and "Pusher" not in ran
    assert not Path(config.serving_dir).exists()
