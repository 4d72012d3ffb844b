"""TF Serving's models.config: parsing, refusal of bad files, and the version policies."""

import re
from pathlib import Path

import pytest

from serving.model_config import ModelConfigError, ModelSource, read_model_config

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_models_config_parses():
    (source,) = read_model_config(str(ROOT / "serving" / "models.config"))
    assert source.name == "fashion_mnist" and source.base_path == "/models/fashion_mnist"
    assert source.policy == "latest" and source.num_versions == 2


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (ModelSource("m", "/m"), {9}),
        (ModelSource("m", "/m", num_versions=2), {7, 9}),
        (ModelSource("m", "/m", policy="all"), {3, 7, 9}),
        (ModelSource("m", "/m", policy="specific", specific=frozenset({3, 4})), {3}),
    ],
)
def test_version_policies_pick_the_versions_to_keep_loaded(source: ModelSource, expected: set[int]):
    assert source.wanted([7, 3, 9]) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model_config_list { config { name: 'x' base_path: '/m' } ", "not a TF Serving ModelServerConfig"),
        ("model_config_list { }", "model_config_list lists no models"),
        ("model_config_list { config { name: '../up' base_path: '/m' } }", "model '../up': name must match"),
        ("model_config_list { config { name: 'm' } }", "model 'm': base_path is empty"),
        (
            "model_config_list { config { name: 'm' base_path: '/m' "
            "version_labels { key: '../x' value: 1 } } }",
            "version label '../x' must match",
        ),
        (
            "model_config_list { config { name: 'm' base_path: '/m' model_platform: 'pytorch' } }",
            "model_platform must be 'tensorflow'",
        ),
        (
            "model_config_list { config { name: 'm' base_path: '/a' } config { name: 'm' base_path: '/b' } }",
            "models configured twice: ['m']",
        ),
    ],
)
def test_bad_models_config_is_refused_with_the_file_and_model_named(tmp_path: Path, text: str, message: str):
    from serving.model_config import read_model_config

    path = tmp_path / "models.config"
    path.write_text(text)
    with pytest.raises(ModelConfigError, match=re.escape(message)) as failure:
        read_model_config(str(path))
    assert str(path) in str(failure.value)
