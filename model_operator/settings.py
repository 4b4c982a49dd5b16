"""Operator settings, from ``MODELROLLOUT_*`` environment variables."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_LEASE_NAMESPACE = "modelrollout-system"


def _pod_namespace() -> str:
    """The namespace the pod runs in (Downward API ``POD_NAMESPACE``), where its Lease lives by default."""
    return os.environ.get("POD_NAMESPACE") or DEFAULT_LEASE_NAMESPACE


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELROLLOUT_", extra="ignore")

    metrics_port: int = Field(default=8081, description="Port of the operator's own /metrics.")
    max_tick_seconds: float = Field(
        default=5.0, gt=0, description="Longest wait between ticks of an active rollout (bounds spec-change latency)."
    )
    idle_tick_seconds: float = Field(default=15.0, gt=0, description="Wait between ticks of a settled resource.")
    prometheus_retries: int = Field(default=2, ge=0, description="Retries of a failed Prometheus query.")
    prometheus_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        description="What one Prometheus query may take, its retries included; a check without an answer by then "
        "is an Error (inconclusive), like an unreachable Prometheus.",
    )
    tick_deadline_seconds: float = Field(
        default=10.0,
        gt=0,
        description="What one tick's analysis may take: a tick past it fails (reason in status and an Event, its "
        "analysis not counted) and is retried, so a hung provider cannot hold a ModelDeployment. Above "
        "prometheus_timeout_seconds, so one hung query is an Error verdict, not a failed tick; below the 15 s "
        "idle tick and the 20 s default analysis interval.",
    )

    # Leader election (a coordination.k8s.io/v1 Lease, as client-go does it): of N replicas exactly one acts.
    leader_election: bool = Field(default=True, description="Act only while holding the Lease; off = act at once.")
    lease_name: str = Field(default="modelrollout-operator", min_length=1, description="Name of the Lease.")
    lease_namespace: str = Field(
        default_factory=_pod_namespace,
        min_length=1,
        description="Namespace of the Lease: POD_NAMESPACE when set, else modelrollout-system.",
    )
    lease_duration_seconds: int = Field(
        default=15, ge=1, description="How long followers wait after the last renewal before taking over."
    )
    renew_deadline_seconds: float = Field(
        default=10.0, gt=0, description="The leader gives up (and exits) when it could not renew for this long."
    )
    retry_period_seconds: float = Field(default=2.0, gt=0, description="Wait between attempts to acquire or renew.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="Operator log level.")
    liveness_port: int = Field(
        default=8080, ge=1, le=65535, description="Port of the liveness endpoint http://0.0.0.0:PORT/healthz."
    )

    @model_validator(mode="after")
    def _query_fits_the_tick(self) -> OperatorSettings:
        """A Prometheus that does not answer must give the check an Error verdict (which ``onNoData`` acts on)
        rather than fail every tick: one query's timeout must fit in the tick's deadline."""
        if not self.prometheus_timeout_seconds < self.tick_deadline_seconds:
            raise ValueError(
                f"prometheus_timeout_seconds ({self.prometheus_timeout_seconds}) must be less than "
                f"tick_deadline_seconds ({self.tick_deadline_seconds}): a query that times out must leave the tick "
                "time to record it"
            )
        return self

    @model_validator(mode="after")
    def _timings_nest(self) -> OperatorSettings:
        """The margins that make the election safe: the leader must know it lost before anyone may take over."""
        if not self.renew_deadline_seconds < self.lease_duration_seconds:
            raise ValueError(
                f"renew_deadline_seconds ({self.renew_deadline_seconds}) must be less than "
                f"lease_duration_seconds ({self.lease_duration_seconds}): a leader that cannot renew must stop "
                "before followers consider its lease expired"
            )
        if not self.retry_period_seconds < self.renew_deadline_seconds:
            raise ValueError(
                f"retry_period_seconds ({self.retry_period_seconds}) must be less than "
                f"renew_deadline_seconds ({self.renew_deadline_seconds}): the leader needs more than one attempt "
                "to renew before its deadline"
            )
        return self
