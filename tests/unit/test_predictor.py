from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_server.bundle import ModelManifest
from model_server.errors import BundleError
from model_server.loader import load_estimator, read_verified
from model_server.predictor import PARITY_ATOL, SklearnPredictor, choose_predictor, probe_rows
from model_server.settings import Engine


def estimator(bundles: dict[str, Path], name: str) -> tuple[object, ModelManifest]:
    manifest, data = read_verified(bundles[name], None)
    return load_estimator(manifest, data, trust_pickle=False, trusted_types=[]), manifest


@pytest.mark.parametrize(("name", "engine"), [("iris-v1", "onnx"), ("iris-v2", "onnx"), ("wine-v1", "sklearn")])
def test_auto_engine_serves_only_what_matches_sklearn(bundles: dict[str, Path], name: str, engine: str) -> None:
    """The wine model is gradient boosting, whose ONNX graph doesn't run in float64: auto keeps sklearn."""
    model, manifest = estimator(bundles, name)
    chosen = choose_predictor(model, manifest, Engine.AUTO)
    assert chosen.name == engine
    rows = probe_rows(manifest, 2000)
    rng = np.random.default_rng(5)
    rows = rows[rng.permutation(len(rows))]
    reference = SklearnPredictor(model).predict_proba(rows)
    actual = chosen.predict_proba(rows)
    assert np.max(np.abs(reference - actual)) <= PARITY_ATOL
    assert np.array_equal(reference.argmax(axis=1), actual.argmax(axis=1))


def test_model_onnx_cannot_serve_falls_back_to_sklearn(bundles: dict[str, Path]) -> None:
    model, manifest = estimator(bundles, "iris-v3-constant")
    assert choose_predictor(model, manifest, Engine.AUTO).name == "sklearn"
    with pytest.raises(BundleError, match="--engine onnx"):
        choose_predictor(model, manifest, Engine.ONNX)


def test_sklearn_engine_is_the_reference(bundles: dict[str, Path]) -> None:
    model, manifest = estimator(bundles, "iris-v1")
    assert choose_predictor(model, manifest, Engine.SKLEARN).name == "sklearn"
