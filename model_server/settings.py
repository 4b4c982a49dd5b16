"""Server settings: one class, read from ``MODEL_SERVER_*`` environment variables.

The CLI writes these variables before starting uvicorn so every worker process reads the same values.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

K8S_NAME = r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?)?$"
"""A Kubernetes object name (RFC 1123 subdomain) or empty."""


class Track(StrEnum):
    """Which role this server plays in a rollout; becomes the ``track`` label of every metric."""

    STABLE = "stable"
    CANARY = "canary"
    PREVIEW = "preview"


class Engine(StrEnum):
    """How predictions are computed."""

    AUTO = "auto"
    """ONNX Runtime when the converted model matches sklearn on the parity probe, else sklearn."""
    ONNX = "onnx"
    """ONNX Runtime or refuse to start."""
    SKLEARN = "sklearn"
    """The reference path: the scikit-learn estimator itself."""


class ServerSettings(BaseSettings):
    """Everything one model-server process needs to know."""

    model_config = SettingsConfigDict(env_prefix="MODEL_SERVER_", extra="ignore", protected_namespaces=())

    bundle_dir: Path = Field(description="Local directory of the verified bundle (the CLI downloads remote ones).")
    expected_digest: str | None = Field(
        default=None, description="sha256 the operator pinned; the model file must hash to it."
    )
    track: Track = Field(default=Track.STABLE, description="Rollout role, used as the metrics' track label.")
    namespace: str = Field(
        default="", pattern=K8S_NAME, description="The ModelDeployment's namespace; the metrics' namespace label."
    )
    model_deployment: str = Field(
        default="", pattern=K8S_NAME, description="The ModelDeployment's name; the metrics' modeldeployment label."
    )
    trust_pickle: bool = Field(
        default=False, description="Allow joblib/pickle bundles, which can run arbitrary code when loaded."
    )
    trusted_types: list[str] = Field(
        default_factory=list, description="Extra fully-qualified types skops may instantiate."
    )
    engine: Engine = Field(default=Engine.AUTO, description="Prediction engine; see Engine.")
    max_batch_rows: int = Field(default=1000, ge=1, le=100_000, description="Largest accepted batch.")
    max_body_bytes: int = Field(default=1 << 20, ge=1024, description="Larger request bodies get HTTP 413.")
    micro_batch_rows: int = Field(
        default=256, ge=1, description="Most rows one engine call takes when concurrent requests are merged."
    )
    drift_window: int = Field(default=2000, ge=10, description="Rows in the rolling window drift PSI uses.")
    access_log: bool = Field(default=False, description="Log every request, not only failures.")
    fault_latency_ms: float = Field(
        default=0.0, ge=0, description="TEST ONLY: added latency per prediction request, milliseconds."
    )
    fault_error_rate: float = Field(
        default=0.0, ge=0, le=1, description="TEST ONLY: share of prediction requests answered with HTTP 500."
    )
    fault_seed: int | None = Field(default=None, description="TEST ONLY: seed for the injected errors.")

    @property
    def faults_enabled(self) -> bool:
        return self.fault_latency_ms > 0 or self.fault_error_rate > 0
