"""The whole loop on a slice of the real data (spans of 150 images, 300 gold test images), as a user sees it.

One session-scoped sequence of runs (`pipeline_runs` in conftest): span 1, span
2 (warm-started, gated against the served model, pushed as canary), a rerun
with nothing new (fully cached), and a changed recipe that is refused.
"""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from components.gold_comparison import GoldComparison
from core.vocabulary import CLASS_NAMES, IMAGE_KEY, LABEL_KEY, PIXELS
from pipeline import nodes
from pipeline.local_runner import PipelineFailedError, run
from pipeline.metadata import Metadata, properties, window_spans
from pipeline.report import RunReport, format_report, save_report
from release.rollout import models_config_path, read_rollout
from tests.conftest import LOOP_SOURCE, SLICE_SIZE, tiny_config

pytestmark = pytest.mark.e2e

EVERY_NODE = {
    nodes.DATA_DIRECTORY, nodes.SPAN_PLANNER, nodes.SPAN_EXAMPLE_GEN, nodes.GOLD_EXAMPLE_GEN,
    nodes.SCHEMA_GEN,
    nodes.SPAN_STATISTICS, nodes.GOLD_STATISTICS, nodes.SPAN_VALIDATOR, nodes.GOLD_VALIDATOR,
    nodes.ANOMALY_GATE, nodes.SPAN_IMAGE_STATISTICS, nodes.DRIFT_BASELINES, nodes.DRIFT_VS_PREVIOUS_SPAN,
    nodes.DRIFT_VS_WINDOW, nodes.DRIFT_GATE, nodes.SERVED_MODEL, nodes.LABEL_GATE, nodes.TRAINING_WINDOW,
    nodes.TRAINING_WINDOW_IMAGE_STATISTICS, nodes.TRANSFORM, nodes.TRAINER, nodes.EVALUATOR,
    nodes.SERVING_CHECK, nodes.PUSHER, nodes.MODEL_VERDICT,
}  # fmt: skip


def metadata(pipeline_runs: dict) -> Metadata:
    return Metadata.open(pipeline_runs["config"])


def test_the_first_span_runs_every_component_and_becomes_stable_and_canary(pipeline_runs: dict):
    report = pipeline_runs["first"]
    assert set(report.states()) == EVERY_NODE  # the first span is compared with itself: nothing before it
    assert set(report.states().values()) == {"COMPLETE"}, report.states()
    assert report.span == 1 and "span 1 (new), the first span" in report.span_plan
    model = report.model
    assert model.blessed is True and model.pushed is True and model.serving_check_passed is True
    assert model.examples == SLICE_SIZE  # the gold set only; notes.txt beside it was not read
    assert 0.0 <= model.accuracy <= 1.0 and set(model.per_class) == set(CLASS_NAMES)
    pushed = Path(model.pushed_path)
    assert pushed.parent == Path(pipeline_runs["config"].model_serving_dir)
    assert pushed.name == model.pushed_version and (pushed / "saved_model.pb").is_file()
    assert f"stable {model.pushed_version}, canary {model.pushed_version}" in report.rollout


def test_the_second_span_trains_on_the_window_warm_started_and_gated_against_the_served_model(
    pipeline_runs: dict,
):
    first, second = pipeline_runs["first"].model, pipeline_runs["second"]
    assert set(second.states()) == EVERY_NODE and set(second.states().values()) <= {"COMPLETE", "CACHED"}
    assert second.span == 4 and "span 4 (new), compared with span 1" in second.span_plan
    assert "refused spans (never trained on): [2, 3]" in second.span_plan
    meta = metadata(pipeline_runs)
    transform = meta.node_executions(nodes.TRANSFORM)[1]  # the second Transform: span 4's
    assert window_spans(meta.one(transform.id, "examples")) == [1, 4]  # the refused spans 2 and 3 left out
    trainer, evaluator = meta.node_executions(nodes.TRAINER)[1], meta.node_executions(nodes.EVALUATOR)[1]
    served = meta.one(trainer.id, "base_model")  # offered what serves (the stable version A) ...
    assert properties(served)["served_version"] == int(first.pushed_version)
    assert second.model.warm_started_from == f"version {first.pushed_version} ({served.uri})"  # ...restored
    assert second.model.not_warm_started_because is None
    assert meta.one(evaluator.id, "baseline_model").id == served.id  # gated against what serves
    assert second.model.pushed is True
    rollout = read_rollout(pipeline_runs["config"].serving_dir, pipeline_runs["config"].model_name)
    assert (rollout.stable, rollout.canary) == (int(first.pushed_version), int(second.model.pushed_version))
    text = Path(models_config_path(pipeline_runs["config"].serving_dir)).read_text()
    assert f'key: "canary"\n      value: {second.model.pushed_version}' in text
    assert f'key: "stable"\n      value: {first.pushed_version}' in text


@pytest.mark.parametrize("run_name", ["first", "fourth"])  # without and with a baseline model in TFMA
def test_confusion_matrix_counts_each_gold_image_once(pipeline_runs: dict, run_name: str):
    model = pipeline_runs[run_name].model
    matrix = np.array(model.confusion_matrix)
    assert matrix.shape == (10, 10) and matrix.sum() == SLICE_SIZE
    assert np.trace(matrix) / SLICE_SIZE == pytest.approx(model.accuracy, abs=1e-6)
    assert all(pair["true"] != pair["predicted"] for pair in model.most_confused)


@pytest.mark.parametrize("run_name", ["first", "fourth"])
def test_per_class_precision_recall_and_calibration_agree_with_the_confusion_matrix(
    pipeline_runs: dict, run_name: str
):
    """TFMA's binarized metrics and the calibration metric, checked against the confusion matrix."""
    model = pipeline_runs[run_name].model
    matrix = np.array(model.confusion_matrix, dtype=float)
    assert set(model.per_class_binary) == set(CLASS_NAMES)
    for i, name in enumerate(CLASS_NAMES):
        figures = model.per_class_binary[name]
        true_positive, predicted, actual = matrix[i, i], matrix[:, i].sum(), matrix[i, :].sum()
        if predicted:
            assert figures["precision"] == pytest.approx(true_positive / predicted, abs=1e-6)
        else:  # never answered: precision is undefined, and the report leaves it out
            assert "precision" not in figures
        assert figures["recall"] == pytest.approx(true_positive / actual, abs=1e-6)
        assert figures["recall"] == pytest.approx(
            model.per_class[name], abs=1e-6
        )  # the label slice's accuracy
        one_vs_rest = (matrix.sum() - predicted - actual + 2 * true_positive) / matrix.sum()
        assert figures["binary_accuracy"] == pytest.approx(one_vs_rest, abs=1e-6)
    buckets = np.array(model.calibration)
    assert buckets.shape == (10, 5) and buckets[:, 2].sum() == SLICE_SIZE
    right = (buckets[:, 2] * buckets[:, 3]).sum() / SLICE_SIZE
    assert right == pytest.approx(model.accuracy, abs=1e-6)  # the buckets hold every answer, right or wrong
    gap = (buckets[:, 2] * np.abs(buckets[:, 3] - buckets[:, 4])).sum() / SLICE_SIZE
    assert model.expected_calibration_error == pytest.approx(gap, abs=1e-6)


def test_saved_report_has_the_confusion_matrix_picture_and_reads_back_identically(pipeline_runs: dict):
    from pipeline.report import latest_report

    config = pipeline_runs["config"]
    saved, path = save_report(pipeline_runs["third"], config)  # the newest run's
    for picture in (saved.confusion_matrix_png, saved.calibration_png):
        png = Path(picture)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert pipeline_runs["third"].confusion_matrix_png is None  # saving does not change the report
    assert RunReport.from_json(json.loads(Path(path).read_text())) == saved
    assert format_report(latest_report(config)) == format_report(saved)  # `fmnist report` prints the same


def test_pushed_model_answers_both_signatures_consistently(pipeline_runs: dict, slice_data: Path):
    model = tf.saved_model.load(pipeline_runs["second"].model.pushed_path)
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


def bfloat16_nodes(saved_model_dir: str) -> list[str]:
    """Nodes of the SavedModel's graph and functions with a bfloat16 type attribute."""
    from tensorflow.core.framework import types_pb2

    from serving.version_files import read_saved_model

    graph = read_saved_model(saved_model_dir).meta_graphs[0].graph_def
    nodes = [*graph.node, *(n for f in graph.library.function for n in f.node_def)]
    return [
        f"{n.op} {n.name}"
        for n in nodes
        if any(
            v.type == types_pb2.DT_BFLOAT16 or types_pb2.DT_BFLOAT16 in v.list.type for v in n.attr.values()
        )
    ]


def test_the_served_graph_computes_in_float32_even_when_training_used_bfloat16(pipeline_runs: dict):
    # Where the CPU has AVX512-BF16, "auto" trains in bfloat16: exported as trained, this graph held
    # hundreds of bfloat16 nodes (438 in the full-data model of 2026-11-26, before the fix).
    assert bfloat16_nodes(pipeline_runs["first"].model.pushed_path) == []


def test_a_run_with_no_new_span_is_fully_cached_and_pushes_nothing(pipeline_runs: dict):
    report = pipeline_runs["third"]
    assert report.span == 4 and "ingested before" in report.span_plan
    executed = {name: state for name, state in report.states().items() if name not in nodes.ALWAYS_RUN}
    assert set(executed.values()) == {"CACHED"} and set(executed) == EVERY_NODE - nodes.ALWAYS_RUN, executed
    assert pipeline_runs["served_after_third"] == pipeline_runs["served_after_second"]


def test_runs_leave_nothing_in_the_system_temp_dir(pipeline_runs: dict):
    # TFX's Beam executors each leave a 52 MB copy of TFX there unless the run cleans up (run_temp_dir).
    assert pipeline_runs["left_in_system_temp"] == []


def test_a_candidate_below_the_floor_is_neither_blessed_nor_pushed(pipeline_runs: dict):
    report = pipeline_runs["fourth"]
    assert report.states()["Trainer"] == "COMPLETE" and report.states()["Evaluator"] == "COMPLETE"
    assert report.model.blessed is False and report.model.pushed is False
    reasons = report.model.not_blessed_because
    assert any(
        r.startswith("sparse_categorical_accuracy = ") and r.endswith("must be >= 0.99") for r in reasons
    )
    assert any(  # compared with the served (stable) version, paired on the same gold images
        r.startswith("paired accuracy change = ") and "wholly below +1 (-max_accuracy_drop)" in r
        for r in reasons
    ), reasons
    per_class = [r for r in reasons if r.startswith("paired accuracy change [class ")]
    assert {r.split("[class ")[1].split("]")[0] for r in per_class} == set(CLASS_NAMES), reasons
    assert pipeline_runs["served_after_fourth"] == pipeline_runs["served_after_second"]  # byte for byte


def test_the_report_gives_both_models_gold_accuracy_with_intervals_and_the_paired_change(pipeline_runs: dict):
    """The Evaluator's own pass over the gold set agrees with TFMA's: the candidate's figures with TFMA's in
    the same run, the served model's (A) with TFMA's of A when A was the candidate."""
    first, second = pipeline_runs["first"].model, pipeline_runs["second"].model
    alone = GoldComparison.from_dict(first.gold_comparison)  # nothing served yet
    assert alone.overall.served is None and alone.overall.change is None
    assert alone.overall.candidate.value == pytest.approx(first.accuracy, abs=1e-6)
    paired = GoldComparison.from_dict(second.gold_comparison)
    assert paired.overall.examples == SLICE_SIZE
    assert paired.overall.candidate.value == pytest.approx(second.accuracy, abs=1e-6)
    assert paired.overall.served.value == pytest.approx(first.accuracy, abs=1e-6)
    for name, figures in paired.per_class.items():
        assert figures.candidate.value == pytest.approx(second.per_class[name], abs=1e-6), name
        assert figures.served.value == pytest.approx(first.per_class[name], abs=1e-6), name
        assert figures.change.value == pytest.approx(second.per_class[name] - first.per_class[name], abs=1e-6)
        assert figures.change.low <= figures.change.value <= figures.change.high
    text = format_report(pipeline_runs["second"])
    assert "change: candidate minus served model, paired on the same images" in text


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
    """Damage span 1 and the gold set of the slice for `case`; return what the failure message must say.

    Span rows are many, so ImportExampleGen's hash split puts some into both the train and the eval split.
    """
    span_extra, gold_extra = data / "span-1" / "extra.tfrecord.gz", data / "test" / "extra.tfrecord.gz"
    if case == "missing label, pixel out of range":
        write_examples(span_extra, [example([i % 256] * PIXELS, None) for i in range(80)])
        write_examples(gold_extra, [example([300] * PIXELS, 3)])
        return ["split 'train', feature 'label'", "split 'eval', feature 'label'",
                "split 'test', feature 'image': Out-of-range values"]  # fmt: skip
    if case == "image of the wrong length, float pixels":
        write_examples(span_extra, [example([0] * 700, i % 10) for i in range(80)])
        for f in (data / "test").glob("*.tfrecord.gz"):
            f.unlink()
        write_examples(gold_extra, [example([0.5] * PIXELS, i % 10) for i in range(40)])
        return ["split 'train', feature 'image'", "split 'test', feature 'image'", "FLOAT"]
    if case == "bytes pixels, empty split":
        for f in [*(data / "span-1").glob("*.tfrecord.gz"), *(data / "test").glob("*.tfrecord.gz")]:
            f.unlink()
        write_examples(span_extra, [example([b"\x00"] * PIXELS, i % 10) for i in range(80)])
        write_examples(gold_extra, [])
        return ["split 'train', feature 'image'", "got STRING", "split 'test', data set: no examples"]
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
    assert "span 1 or the gold test set breaks the curated schema; stopped before Transform" in message
    for words in expected:
        assert words in message, message
    ran = failure.value.report.states()
    assert ran[nodes.ANOMALY_GATE] == "FAILED"
    assert nodes.TRANSFORM not in ran and nodes.TRAINER not in ran and nodes.PUSHER not in ran
    assert not Path(config.serving_dir).exists()


def test_lineage_of_the_served_version_walks_back_to_the_spans(pipeline_runs: dict, capsys):
    from cli.main import main
    from ingest.prepare import OFFICIAL_FILES
    from pipeline.definition import RUN_MODULE
    from pipeline.fingerprint import code_fingerprint
    from pipeline.lineage import LineageError, lineage_of

    config, first, second = (
        pipeline_runs["config"],
        pipeline_runs["first"].model,
        pipeline_runs["second"].model,
    )
    chain = lineage_of(config)  # the served version: stable, the first run's (the second is only canary)
    assert chain.version == int(first.pushed_version) and chain.pushed_destination == first.pushed_path
    assert chain.evaluation.blessed is True and chain.evaluation.accuracy == pytest.approx(first.accuracy)
    assert chain.serving_check.node == nodes.SERVING_CHECK and chain.serving_check.blessed is True
    assert chain.hyperparameters["learning_rate"] == config.training.learning_rate
    assert chain.code_fingerprint == code_fingerprint(RUN_MODULE)
    assert chain.schema_file == config.schema_path and chain.data_dir == config.data_dir
    assert [s.span for s in chain.spans] == [1] and chain.warm_started_from is None
    assert chain.spans[0].source == LOOP_SOURCE
    assert "split:input,num_files:4" in chain.spans[0].input_fingerprint  # not backup.tfrecord
    assert len(chain.spans[0].file_sha256) == 4
    assert chain.source_checksums["train images"] == OFFICIAL_FILES["train"]["images"].sha256
    assert chain.image_statistics_bins == 20
    assert (Path(chain.image_statistics_uri) / "Split-train" / "FeatureStats.pb").is_file()

    canary = lineage_of(config, int(second.pushed_version))
    assert [s.span for s in canary.spans] == [1, 4]
    assert canary.warm_started_from.startswith(f"version {first.pushed_version} (")
    assert canary.evaluation.baseline_model_uri == canary.warm_started_from

    assert chain.spans[0].examples == 2000
    # its own push (stable and canary at once), then the second version's push beside it, as the canary
    assert [h["action"] for h in chain.rollout_history] == ["push", "push"]
    assert chain.rollout_history[0]["after"] == {
        "stable": chain.version,
        "canary": chain.version,
        "history": [],
    }
    assert chain.rollout_history[1]["after"]["canary"] == canary.version
    assert [h["after"]["canary"] for h in canary.rollout_history] == [canary.version]

    assert main(["lineage", "--workdir", config.workdir, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == chain.version
    assert main(["lineage", "--workdir", config.workdir]) == 0
    assert f"rollout history ({chain.history_file}, fmnist history --version {chain.version})" in (
        capsys.readouterr().out
    )
    with pytest.raises(LineageError, match="version 1 was not pushed"):
        lineage_of(config, 1)


def test_lineage_works_from_any_directory_with_an_absolute_workdir(pipeline_runs: dict):
    import subprocess
    import sys

    workdir = pipeline_runs["config"].workdir
    result = subprocess.run(
        [str(Path(sys.executable).parent / "fmnist"), "lineage", "--workdir", workdir],
        cwd="/", capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"accuracy {pipeline_runs['first'].model.accuracy:.4f}" in result.stdout
    assert "unknown" not in result.stdout


def test_the_run_command_prints_progress_and_its_report_and_no_third_party_noise(
    slice_data: Path, tmp_path: Path
):
    """What `make run` shows: a line per step, the span plan, the epochs, the report; no warnings."""
    import re
    import subprocess
    import sys

    shutil.copytree(slice_data, tmp_path / "data")
    shutil.rmtree(tmp_path / "data" / "span-2")
    argv = [
        str(Path(sys.executable).parent / "fmnist"), "run", "--workdir", str(tmp_path),
        "--epochs", "1", "--max-steps-per-epoch", "3", "--batch-size", "32", "--conv-filters", "8", "16",
        "--dense-units", "32", "--beam-direct-mode", "in_memory", "--accuracy-floor", "0",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "PYTHONWARNINGS")}
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = re.compile(
        r"\d\d:\d\d:\d\d (Component \w+ is (running|finished)\.|span plan: .*)"  # the progress lines
        r"|\d+/\d+ - \d+s - loss: .*"  # Keras, one line per epoch
    )
    unexpected = [line for line in result.stderr.splitlines() if not expected.fullmatch(line)]
    assert unexpected == [], "\n".join(unexpected)
    assert "pushed: version" in result.stdout and "report: " in result.stdout


def test_the_model_card_of_the_canary_says_what_a_reviewer_needs(pipeline_runs: dict, tmp_path: Path, capsys):
    """Written from ML Metadata and the Evaluator's output; looked at in a browser (screenshot kept)."""
    from cli.main import main
    from core.errors import EXIT_BAD_INPUT
    from pipeline.model_card import collect_model_card
    from pipeline.model_card_page import HTML_FILE, MARKDOWN_FILE, PLOT_FILE
    from tests.screenshot import screenshot

    config, second = pipeline_runs["config"], pipeline_runs["second"].model
    card = collect_model_card(config, int(second.pushed_version))
    assert card.role == "canary" and [s["span"] for s in card.spans] == [1, 4]
    assert [s["images"] for s in card.spans] == [2000, 300]
    assert card.warm_started_from.startswith("version ")
    assert card.overall.examples == SLICE_SIZE and card.overall.value == pytest.approx(
        second.accuracy, abs=1e-6
    )
    assert len(card.per_class) == len(CLASS_NAMES) and all(a.low <= a.value <= a.high for a in card.per_class)
    assert card.calibration_error is not None and 1 <= len(card.weakest) <= 3 and card.confused
    assert all(a.value < card.overall.value for a in card.weakest)
    assert any("paired change against the served model" in gate for gate in card.gates)
    assert {s["name"] for s in card.signatures} >= {"serving_default", "predict_images", "classify"}
    assert [h["action"] for h in card.history] == ["push"]

    output = tmp_path / "card"
    argv = [
        "model-card",
        "--workdir",
        config.workdir,
        "--version",
        second.pushed_version,
        "--output",
        str(output),
    ]
    assert main(argv) == 0
    page = (output / HTML_FILE).read_text()
    for title in ("Training data", "Gold accuracy", "Calibration", "Gates passed", "Known weaknesses",
                  "Serving signatures", "Rollout history"):  # fmt: skip
        assert f"<h2>{title}</h2>" in page and f"## {title}" in (output / MARKDOWN_FILE).read_text()
    assert (output / PLOT_FILE).read_bytes().startswith(b"\x89PNG")
    assert main(
        ["model-card", "--workdir", config.workdir, "--version", "1", "--output", str(tmp_path / "no")]
    ) == (EXIT_BAD_INPUT)
    assert "version 1 was not pushed" in capsys.readouterr().err and not (tmp_path / "no").exists()
    picture = screenshot(output / HTML_FILE, output / "model_card.png")
    print(f"model card screenshot: {picture}")
