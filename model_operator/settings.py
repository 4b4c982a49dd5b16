"""Operator settings, from ``MODELROLLOUT_*`` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELROLLOUT_", extra="ignore")

    metrics_port: int = Field(default=8081, description="Port of the operator's own /metrics.")
    max_tick_seconds: float = Field(
        default=5.0, gt=0, description="Longest wait between ticks of an active rollout (bounds spec-change latency)."
    )
    idle_tick_seconds: float = Field(default=15.0, gt=0, description="Wait between ticks of a settled resource.")
    prometheus_retries: int = Field(default=2, ge=0, description="Retries of a failed Prometheus query.")
    prometheus_timeout_seconds: float = Field(default=5.0, gt=0, description="Timeout of one Prometheus query.")
