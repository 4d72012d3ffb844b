"""The baseline strategy: newest blessed model, the candidate (newest model) excluded."""

from tfx.types import standard_artifacts

from components.baseline import PreviousBlessedModelStrategy


def model(artifact_id: int) -> standard_artifacts.Model:
    artifact = standard_artifacts.Model()
    artifact.id = artifact_id
    return artifact


def blessing(model_id: int, blessed: bool) -> standard_artifacts.ModelBlessing:
    artifact = standard_artifacts.ModelBlessing()
    artifact.id = 100 + model_id
    artifact.set_int_custom_property("current_model_id", model_id)
    artifact.set_int_custom_property("blessed", int(blessed))
    return artifact


def resolve(models, blessings):
    strategy = PreviousBlessedModelStrategy()
    return strategy.resolve_artifacts(None, {"model": models, "model_blessing": blessings})


def test_candidate_blessed_in_an_earlier_run_is_not_its_own_baseline():
    result = resolve([model(1)], [blessing(1, True)])
    assert result["model"] == []


def test_new_candidate_is_compared_with_the_last_blessed_model():
    result = resolve([model(1), model(2), model(3)], [blessing(1, True), blessing(2, False)])
    assert [m.id for m in result["model"]] == [1]
    assert [b.id for b in result["model_blessing"]] == [101]


def test_newest_blessed_wins_among_older_models():
    result = resolve([model(3), model(1), model(2)], [blessing(1, True), blessing(2, True)])
    assert [m.id for m in result["model"]] == [2]
