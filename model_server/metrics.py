"""Prometheus metrics of the model server. Every series carries ``namespace`` and ``modeldeployment`` (the
ModelDeployment the server belongs to, so the operator judges each one on its own traffic whatever the scrape
configuration; empty — so absent in Prometheus — for a server run by hand), ``model``, ``version`` and ``track``.

Names (documented in the README; the operator's analysis queries them):

    modelserver_requests_total{endpoint,code}          prediction requests by HTTP status code
    modelserver_request_duration_seconds{endpoint}     latency histogram, 100 µs … 10 s
    modelserver_predictions_total{class}               predicted rows by class
    modelserver_prediction_score                       histogram of the top class probability
    modelserver_input_drift_psi{feature}               rolling PSI of inputs vs the training reference
    modelserver_inflight_requests                      prediction requests being served now
    modelserver_batch_rows                             rows per engine call (micro-batching)
    modelserver_model_info{digest,engine,sklearn}      1 for the loaded model

With several worker processes, prometheus_client's multiprocess mode is used (``PROMETHEUS_MULTIPROC_DIR``)
so a scrape sees the sum over workers, whichever worker answers it.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05,
    0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
BASE_LABELS = ("namespace", "modeldeployment", "model", "version", "track")
disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series double the exposition and no query here uses them


def multiprocess_enabled() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class ServerMetrics:
    """The server's metric objects, pre-bound to this model's base labels."""

    def __init__(self, model: str, version: str, track: str, namespace: str = "", deployment: str = "") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = None if multiprocess_enabled() else self.registry
        if registry is None:
            MultiProcessCollector(self.registry)  # type: ignore[no-untyped-call]
        self._base = {
            "namespace": namespace, "modeldeployment": deployment, "model": model, "version": version, "track": track
        }  # fmt: skip
        self.requests = Counter(
            "modelserver_requests", "Prediction requests by HTTP status code.",
            (*BASE_LABELS, "endpoint", "code"), registry=registry,
        )  # fmt: skip
        self.latency = Histogram(
            "modelserver_request_duration_seconds", "Prediction request latency, seconds.",
            (*BASE_LABELS, "endpoint"), buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.predictions = Counter(
            "modelserver_predictions", "Predicted rows by class.", (*BASE_LABELS, "class"), registry=registry
        )
        self.score = Histogram(
            "modelserver_prediction_score", "Probability of the predicted class.",
            BASE_LABELS, buckets=SCORE_BUCKETS, registry=registry,
        )  # fmt: skip
        self.drift = Gauge(
            "modelserver_input_drift_psi", "Rolling PSI of live inputs against the training reference.",
            (*BASE_LABELS, "feature"), registry=registry, multiprocess_mode="mostrecent",
        )  # fmt: skip
        self.inflight = Gauge(
            "modelserver_inflight_requests", "Prediction requests in flight.",
            BASE_LABELS, registry=registry, multiprocess_mode="livesum",
        )  # fmt: skip
        self.batch_rows = Histogram(
            "modelserver_batch_rows", "Rows per engine call after micro-batching.",
            BASE_LABELS, buckets=BATCH_BUCKETS, registry=registry,
        )  # fmt: skip
        self.info = Gauge(
            "modelserver_model_info", "The loaded model; value is always 1.",
            (*BASE_LABELS, "digest", "engine", "sklearn"), registry=registry, multiprocess_mode="max",
        )  # fmt: skip
        self.inflight_now = self.inflight.labels(**self._base)
        self.score_now = self.score.labels(**self._base)
        self.batch_now = self.batch_rows.labels(**self._base)
        self._request_children: dict[tuple[str, int], Counter] = {}
        self._latency_children: dict[str, Histogram] = {}

    def observe_request(self, endpoint: str, code: int, seconds: float) -> None:
        key = (endpoint, code)
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children[key] = self.requests.labels(
                **self._base, endpoint=endpoint, code=str(code)
            )
        counter.inc()
        histogram = self._latency_children.get(endpoint)
        if histogram is None:
            histogram = self._latency_children[endpoint] = self.latency.labels(**self._base, endpoint=endpoint)
        histogram.observe(seconds)

    def observe_request_count_only(self, endpoint: str, code: int) -> None:
        """Create the series at zero, so rates exist before the first request with that code."""
        self.requests.labels(**self._base, endpoint=endpoint, code=str(code))

    def count_predictions(self, class_counts: dict[str, int]) -> None:
        for name, count in class_counts.items():
            if count:
                self.predictions.labels(**self._base, **{"class": name}).inc(count)

    def set_drift(self, scores: dict[str, float]) -> None:
        for feature, value in scores.items():
            self.drift.labels(**self._base, feature=feature).set(value)

    def set_info(self, digest: str, engine: str, sklearn_version: str) -> None:
        self.info.labels(**self._base, digest=digest, engine=engine, sklearn=sklearn_version).set(1)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
