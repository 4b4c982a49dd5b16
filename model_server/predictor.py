"""Prediction engines: the scikit-learn reference path and ONNX Runtime.

Both take a float64 matrix whose columns follow the manifest's feature order and return class
probabilities. ONNX is used only after it reproduces sklearn's probabilities on a deterministic probe
set within ``PARITY_ATOL`` and picks the same class for every probe row; otherwise the server keeps the
reference path (or refuses to start when ONNX was demanded).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from model_server.bundle import ModelManifest
from model_server.errors import BundleError
from model_server.settings import Engine

PARITY_ATOL = 1e-5
PARITY_ROWS = 512
# ai.onnx.ml 3 has double-precision tree ensembles, so trees keep float64 end to end
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
log = logging.getLogger(__name__)


class Predictor(Protocol):
    name: str

    def predict_proba(self, rows: NDArray[np.float64]) -> NDArray[np.float64]:
        """Probabilities, shape (rows, classes). Pure and thread-safe."""
        ...


class SklearnPredictor:
    name = "sklearn"

    def __init__(self, estimator: Any) -> None:
        self._estimator = estimator

    def predict_proba(self, rows: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.asarray(self._estimator.predict_proba(rows), dtype=np.float64)


class OnnxPredictor:
    name = "onnx"

    def __init__(self, estimator: Any, n_features: int) -> None:
        import onnxruntime
        from skl2onnx import to_onnx

        sample = np.zeros((1, n_features), dtype=np.float64)
        options = {id(estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator): {"zipmap": False}}
        onnx_model = to_onnx(estimator, sample, options=options, target_opset=TARGET_OPSET)
        session_options = onnxruntime.SessionOptions()
        session_options.intra_op_num_threads = 1
        session_options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(
            onnx_model.SerializeToString(), session_options, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name
        outputs = [o.name for o in self._session.get_outputs()]
        self._output = "probabilities" if "probabilities" in outputs else outputs[-1]

    def predict_proba(self, rows: NDArray[np.float64]) -> NDArray[np.float64]:
        (probabilities,) = self._session.run([self._output], {self._input: rows})
        return np.asarray(probabilities, dtype=np.float64)


def probe_rows(manifest: ModelManifest, count: int = PARITY_ROWS) -> NDArray[np.float64]:
    """Seeded rows spread over (and a little beyond) each feature's training range."""
    rng = np.random.default_rng(0)
    low = np.array([f.min for f in manifest.features])
    high = np.array([f.max for f in manifest.features])
    span = np.where(high > low, high - low, 1.0)
    return rng.uniform(low - 0.1 * span, high + 0.1 * span, size=(count, len(low)))


def parity_error(reference: Predictor, candidate: Predictor, rows: NDArray[np.float64]) -> str | None:
    """None when ``candidate`` agrees with ``reference`` on ``rows``, else what differs."""
    expected = reference.predict_proba(rows)
    actual = candidate.predict_proba(rows)
    if expected.shape != actual.shape:
        return f"shape {actual.shape} != {expected.shape}"
    worst = float(np.max(np.abs(expected - actual)))
    if worst > PARITY_ATOL:
        return f"max probability difference {worst:.2e} > {PARITY_ATOL:.0e}"
    flipped = int(np.sum(expected.argmax(axis=1) != actual.argmax(axis=1)))
    if flipped:
        return f"{flipped} probe rows change class"
    return None


def choose_predictor(estimator: Any, manifest: ModelManifest, engine: Engine) -> Predictor:
    reference = SklearnPredictor(estimator)
    if engine is Engine.SKLEARN:
        return reference
    try:
        candidate: Predictor = OnnxPredictor(estimator, len(manifest.features))
        problem = parity_error(reference, candidate, probe_rows(manifest))
    except Exception as exc:  # skl2onnx raises many types for unsupported estimators
        problem = f"conversion failed: {type(exc).__name__}: {exc}"
    if problem is None:
        return candidate
    if engine is Engine.ONNX:
        raise BundleError(f"--engine onnx: ONNX Runtime cannot serve this model exactly ({problem})")
    log.info("serving with sklearn: ONNX path rejected", extra={"reason": problem})
    return reference
