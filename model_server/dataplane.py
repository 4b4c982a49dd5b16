"""The protocol-agnostic core between the HTTP endpoints and the model (MLServer's DataPlane idea).

It owns the loaded model, the micro-batcher, the prediction-side metrics (classes, scores, drift) and
the test-only fault injector. Both ``/predict`` and the Open Inference Protocol call ``predict``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from model_server.batching import Matrix, MicroBatcher
from model_server.bundle import ModelManifest
from model_server.drift import RollingDrift
from model_server.errors import FieldProblem, InjectedFault, InvalidInput
from model_server.loader import load_estimator, read_verified
from model_server.metrics import ServerMetrics
from model_server.predictor import Predictor, choose_predictor
from model_server.settings import ServerSettings

DRIFT_PUBLISH_SECONDS = 1.0
DRIFT_MIN_ROWS = 100  # PSI of a handful of rows is noise, not drift
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    classes: list[str]
    probabilities: NDArray[np.float64]


class FaultInjector:
    """TEST ONLY: adds latency and HTTP 500s to prediction requests, to rehearse rollbacks."""

    def __init__(self, latency_ms: float, error_rate: float, seed: int | None) -> None:
        self.latency_s = latency_ms / 1000.0
        self.error_rate = error_rate
        self._rng = random.Random(seed)  # noqa: S311 - fault sampling, not security

    async def apply(self) -> None:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if self.error_rate and self._rng.random() < self.error_rate:
            raise InjectedFault("injected fault (test-only fault injection is enabled on this server)")


class DataPlane:
    def __init__(self, manifest: ModelManifest, predictor: Predictor, settings: ServerSettings) -> None:
        self.manifest = manifest
        self.predictor = predictor
        self.settings = settings
        self.metrics = ServerMetrics(
            manifest.name, manifest.version, settings.track.value, settings.namespace, settings.model_deployment
        )
        self.metrics.set_info(manifest.digest, predictor.name, manifest.framework.sklearn)
        self.classes = np.asarray(manifest.classes, dtype=object)
        self._drift = RollingDrift(manifest.feature_names, manifest.reference.features, settings.drift_window)
        self._drift_published = 0.0
        self._batcher = MicroBatcher(predictor.predict_proba, settings.micro_batch_rows, self._observe_batch)
        self.faults = (
            FaultInjector(settings.fault_latency_ms, settings.fault_error_rate, settings.fault_seed)
            if settings.faults_enabled
            else None
        )
        self.ready = False

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> DataPlane:
        manifest, model_bytes = read_verified(settings.bundle_dir, settings.expected_digest)
        estimator = load_estimator(
            manifest, model_bytes, trust_pickle=settings.trust_pickle, trusted_types=settings.trusted_types
        )
        return cls(manifest, choose_predictor(estimator, manifest, settings.engine), settings)

    def warm_up(self) -> None:
        """Run the engine once per batch shape class so the first real request pays no lazy init."""
        rows = np.array([[(f.min + f.max) / 2 for f in self.manifest.features]] * 8, dtype=np.float64)
        for n in (1, 8):
            self.predictor.predict_proba(rows[:n])
        self.ready = True

    async def predict(self, rows: Matrix, row_field: str | None = None) -> Prediction:
        """Predict ``rows``; ``row_field`` names them in errors (``instances`` → ``instances[3]``)."""
        if self.faults is not None:
            await self.faults.apply()
        probabilities = await self._batcher.submit(rows)
        unusable = np.flatnonzero(~np.isfinite(probabilities).all(axis=1))
        if len(unusable):
            fields = [f"{row_field}[{i}]" if row_field else "body" for i in unusable.tolist()]
            raise InvalidInput(
                f"{', '.join(fields[:5])}: the model gives no finite probabilities for these values; "
                "they are far outside the training range",
                [FieldProblem(f, "model output is not finite for these values", "non_finite_output") for f in fields],
            )
        return Prediction(list(self.classes[probabilities.argmax(axis=1)]), probabilities)

    def _observe_batch(self, rows: Matrix, probabilities: Matrix) -> None:
        metrics = self.metrics
        metrics.batch_now.observe(len(rows))
        finite = np.isfinite(probabilities).all(axis=1)
        if not finite.all():
            rows, probabilities = rows[finite], probabilities[finite]
        counts = np.bincount(probabilities.argmax(axis=1), minlength=len(self.classes))
        metrics.count_predictions({str(c): int(n) for c, n in zip(self.classes, counts, strict=True)})
        for score in probabilities.max(axis=1):
            metrics.score_now.observe(float(score))
        self._drift.update(rows)
        now = time.monotonic()
        enough = self._drift.rows_seen >= min(DRIFT_MIN_ROWS, self.settings.drift_window)
        if enough and now - self._drift_published >= DRIFT_PUBLISH_SECONDS:
            self._drift_published = now
            metrics.set_drift(self._drift.scores())
