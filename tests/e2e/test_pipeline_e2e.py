"""The whole pipeline on a 300/300 slice of the real data, as a user would notice it.

One session-scoped sequence of runs (`pipeline_runs` in conftest; each costs a minute or more):
1. a fresh run executes every component and pushes a version;
2. an unchanged rerun is fully cached and pushes nothing new;
3. a retrained candidate below the accuracy floor is evaluated against the
   blessed baseline, not blessed, and not pushed.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from components.features import CLASS_NAMES, IMAGE_KEY, LABEL_KEY, PIXELS
from pipeline.local_runner import PipelineFailedError, run
from pipeline.report import save_report
from tests.conftest import tiny_config

pytestmark = pytest.mark.e2e

EXECUTED_NODES = [
    "ImportExampleGen", "ImportSchemaGen", "StatisticsGen", "ImageFeatureStatistics", "ExampleValidator",
    "AnomalyGate", "Transform", "Trainer", "previous_blessed_model", "Evaluator", "ServingCheck", "Pusher",
]  # fmt: skip


def states(report: dict) -> dict[str, str]:
    return {row["component"]: row["state"] for row in report["components"]}


def test_first_run_executes_every_component_and_pushes_a_version(pipeline_runs: dict):
    report = pipeline_runs["first"]
    assert set(states(report)) == set(EXECUTED_NODES)
    assert all(state == "COMPLETE" for state in states(report).values()), states(report)
    model = report["model"]
    assert model["blessed"] is True and model["pushed"] is True
    assert model["serving_check_passed"] is True
    assert model["examples"] == 300  # notes.txt and backup.tfrecord beside the data were not read
    assert 0.0 <= model["accuracy"] <= 1.0 and set(model["per_class"]) == set(CLASS_NAMES)
    pushed = Path(model["pushed_path"])
    assert pushed.parent == Path(pipeline_runs["config"].model_serving_dir)
    assert pushed.name == model["pushed_version"] and pushed.name.isdigit()
    assert (pushed / "saved_model.pb").is_file()
    assert list(pipeline_runs["served_after_first"]) and all(
        not k.startswith(".tmp") for k in pipeline_runs["served_after_first"]
    )


@pytest.mark.parametrize("run_name", ["first", "third"])  # without and with a baseline model in TFMA
def test_confusion_matrix_counts_each_test_image_once(pipeline_runs: dict, run_name: str):
    model = pipeline_runs[run_name]["model"]
    matrix = np.array(model["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == 300
    assert np.trace(matrix) / 300 == pytest.approx(model["accuracy"], abs=1e-6)
    assert all(pair["true"] != pair["predicted"] for pair in model["most_confused"])


def test_saved_report_has_the_confusion_matrix_picture(pipeline_runs: dict):
    config = pipeline_runs["config"]
    save_report(pipeline_runs["first"], config)
    png = Path(pipeline_runs["first"]["model"]["confusion_matrix_png"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_pushed_model_answers_both_signatures_consistently(pipeline_runs: dict, slice_data: Path):
    model = tf.saved_model.load(pipeline_runs["first"]["model"]["pushed_path"])
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


def test_unchanged_rerun_is_fully_cached_and_pushes_nothing(pipeline_runs: dict):
    report = pipeline_runs["second"]
    executed = {name: state for name, state in states(report).items() if name != "previous_blessed_model"}
    assert set(executed.values()) == {"CACHED"}, executed
    assert pipeline_runs["served_after_second"] == pipeline_runs["served_after_first"]
    assert report["model"]["pushed_version"] == pipeline_runs["first"]["model"]["pushed_version"]


def test_candidate_below_the_floor_is_neither_blessed_nor_pushed(pipeline_runs: dict):
    report = pipeline_runs["third"]
    assert states(report)["Trainer"] == "COMPLETE" and states(report)["Evaluator"] == "COMPLETE"
    assert report["model"]["blessed"] is False and report["model"]["pushed"] is False
    reasons = report["model"]["not_blessed_because"]
    assert any(
        r.startswith("sparse_categorical_accuracy = ") and r.endswith("must be >= 0.99") for r in reasons
    )
    assert any(  # compared with the first run's blessed model
        r.startswith("sparse_categorical_accuracy change = ")
        and r.endswith("absolute change vs baseline must be >= 1")
        for r in reasons
    ), reasons
    assert pipeline_runs["served_after_third"] == pipeline_runs["served_after_first"]  # byte for byte


def write_examples(path: Path, examples: list[tf.train.Example]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
        for example in examples:
            writer.write(example.SerializeToString())


def example(image: list, label: int | None) -> tf.train.Example:
    """An example whose image is int64, float or bytes, as the values given."""
    if image and isinstance(image[0], float):
        pixels = tf.train.Feature(float_list=tf.train.FloatList(value=image))
    elif image and isinstance(image[0], bytes):
        pixels = tf.train.Feature(bytes_list=tf.train.BytesList(value=image))
    else:
        pixels = tf.train.Feature(int64_list=tf.train.Int64List(value=image))
    feature = {IMAGE_KEY: pixels}
    if label is not None:
        feature[LABEL_KEY] = tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))
    return tf.train.Example(features=tf.train.Features(feature=feature))


def _damage(data: Path, case: str) -> list[str]:
    """Damage the prepared slice for `case`; return what the failure message must say."""
    rows = [example([i % 256] * PIXELS, i % 10) for i in range(40)]
    train_extra, test_extra = (
        data / "train" / "data-00004-of-00004.tfrecord.gz",
        data / "test" / "extra.tfrecord.gz",
    )
    if case == "missing label, pixel out of range":
        write_examples(train_extra, [*rows, example([0] * PIXELS, None)])
        write_examples(test_extra, [*rows, example([300] * PIXELS, 3)])
        return ["split 'eval', feature 'image': Out-of-range values", "split 'train', feature 'label'"]
    if case == "image of the wrong length, float pixels":
        write_examples(train_extra, [*rows, example([0] * 700, 1)])
        for f in (data / "test").glob("*.tfrecord.gz"):
            f.unlink()
        write_examples(test_extra, [example([0.5] * PIXELS, i % 10) for i in range(40)])
        return ["split 'train', feature 'image'", "split 'eval', feature 'image'", "FLOAT"]
    if case == "bytes pixels, empty split":
        for f in [*(data / "train").glob("*.tfrecord.gz"), *(data / "test").glob("*.tfrecord.gz")]:
            f.unlink()
        write_examples(train_extra, [example([b"\x00"] * PIXELS, i % 10) for i in range(40)])
        write_examples(test_extra, [])
        return ["split 'train', feature 'image'", "got STRING", "split 'eval', data set: no examples"]
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "missing label, pixel out of range",
        "image of the wrong length, float pixels",
        "bytes pixels, empty split",
    ],
)
def test_bad_data_stops_the_run_before_transform_and_pushes_nothing(
    slice_data: Path, tmp_path: Path, case: str
):
    data = tmp_path / "data"
    shutil.copytree(slice_data, data)
    expected = _damage(data, case)
    config = tiny_config(tmp_path, data)

    with pytest.raises(PipelineFailedError) as failure:
        run(config)
    message = str(failure.value)
    assert "stopped before Transform and Trainer" in message
    for words in expected:
        assert words in message, message
    ran = states(failure.value.report)
    assert ran["AnomalyGate"] == "FAILED"
    assert "Transform" not in ran and "Trainer" not in ran and "Pusher" not in ran
    assert not Path(config.serving_dir).exists()


def test_lineage_of_the_served_version_walks_back_to_the_data(pipeline_runs: dict, capsys):
    from components.dataset import OFFICIAL_FILES
    from pipeline.cli import main
    from pipeline.lineage import LineageError, lineage_of
    from pipeline.pipeline import code_fingerprint

    config, first = pipeline_runs["config"], pipeline_runs["first"]["model"]
    chain = lineage_of(config)  # the served version: the first run's (the third was not pushed)
    assert chain["version"] == int(first["pushed_version"])
    assert chain["pushed"]["destination"] == first["pushed_path"]
    assert chain["evaluation"]["blessed"] is True
    assert chain["evaluation"]["accuracy"] == pytest.approx(first["accuracy"])
    assert chain["serving_check"] == {"node": "ServingCheck", "blessed": True}
    assert chain["model"]["hyperparameters"]["learning_rate"] == config.training.learning_rate
    assert chain["model"]["code_fingerprint"] == code_fingerprint()
    assert chain["schema"]["schema_file"] == config.schema_path
    assert chain["examples"]["input_base"] == config.data_dir
    assert chain["examples"]["source_checksums"]["train images"] == OFFICIAL_FILES["train"]["images"].sha256
    assert "split:train" in chain["examples"]["input_fingerprint"]
    assert list(Path(chain["statistics"]["uri"]).glob("Split-train/FeatureStats.pb"))
    assert chain["image_statistics"]["bins"] == 20
    assert (Path(chain["image_statistics"]["uri"]) / "Split-train" / "ImageFeatureStats.pb").is_file()

    assert main(["lineage", "--workdir", config.workdir, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == chain["version"]
    assert main(["lineage", "--workdir", config.workdir]) == 0
    assert f"version {chain['version']} at " in capsys.readouterr().out
    with pytest.raises(LineageError, match="version 1 was not pushed"):
        lineage_of(config, 1)
