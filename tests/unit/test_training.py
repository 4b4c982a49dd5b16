from __future__ import annotations

from pathlib import Path

import pytest

from model_server.bundle import ModelFormat, ModelManifest, sha256_hex
from model_server.training import TrainingError, feature_name, load_config, train
from tests.conftest import EXAMPLES


def test_same_config_and_seed_give_the_same_digest(tmp_path: Path) -> None:
    config = load_config(EXAMPLES / "iris-v2.yaml")
    first = train(config, tmp_path / "a")
    second = train(config, tmp_path / "b")
    assert first.sha256 == second.sha256
    assert (tmp_path / "a" / "model.skops").read_bytes() == (tmp_path / "b" / "model.skops").read_bytes()


def test_another_seed_gives_another_model(tmp_path: Path) -> None:
    config = load_config(EXAMPLES / "iris-v2.yaml")
    reseeded = config.model_copy(update={"seed": config.seed + 1})
    assert train(config, tmp_path / "a").sha256 != train(reseeded, tmp_path / "b").sha256


def test_manifest_describes_the_model(manifests: dict[str, ModelManifest], bundles: dict[str, Path]) -> None:
    manifest = manifests["iris-v1"]
    assert manifest.name == "iris" and manifest.version == "1.0.0"
    assert manifest.format is ModelFormat.SKOPS
    assert manifest.sha256 == sha256_hex((bundles["iris-v1"] / manifest.model_file).read_bytes())
    assert manifest.feature_names == ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"]
    assert manifest.classes == ["setosa", "versicolor", "virginica"]
    assert manifest.metrics["test_accuracy"] > 0.85
    assert 0 < manifest.metrics["cv_accuracy_mean"] <= 1
    for feature in manifest.features:
        histogram = manifest.reference.features[feature.name]
        assert len(histogram.fractions) == len(histogram.edges) + 1
        assert sum(histogram.fractions) == pytest.approx(1.0)
        assert feature.min <= min(histogram.edges) <= max(histogram.edges) <= feature.max
    assert sum(manifest.reference.predictions.values()) == pytest.approx(1.0)
    assert manifest.framework.sklearn and manifest.framework.python
    assert manifest.training["config"]["seed"] == 42
    assert manifest.created_at.endswith("+00:00")


def test_constant_model_predicts_one_class(manifests: dict[str, ModelManifest]) -> None:
    predictions = manifests["iris-v3-constant"].reference.predictions
    assert sorted(predictions.values()) == [0.0, 0.0, 1.0]


def test_second_dataset(manifests: dict[str, ModelManifest]) -> None:
    wine = manifests["wine-v1"]
    assert len(wine.features) == 13 and len(wine.classes) == 3


def test_unknown_hyper_parameter_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: iris\nversion: '1'\ndataset: {name: iris}\nestimator: {type: random_forest, params: {n_trees: 5}}\n"
    )
    with pytest.raises(TrainingError, match=r"no parameter\(s\) \['n_trees'\]"):
        train(load_config(path), tmp_path / "out")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: iris\nversion: '1'\ndataset: {name: mnist}\nestimator: {type: dummy}\n", "dataset.name"),
        ("name: Iris!\nversion: '1'\ndataset: {name: iris}\nestimator: {type: dummy}\n", "name"),
        ("name: iris\nversion: '1'\ndataset: {name: iris}\nestimator: {type: dummy}\ncolour: red\n", "colour"),
        ("name: [unclosed", "cannot read config"),
    ],
)
def test_invalid_configs_say_which_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(TrainingError, match=message):
        load_config(path)


def test_feature_names_become_identifiers() -> None:
    assert feature_name("sepal length (cm)") == "sepal_length_cm"
    assert feature_name("od280/od315_of_diluted_wines") == "od280_od315_of_diluted_wines"
    assert feature_name("1st") == "f_1st"
