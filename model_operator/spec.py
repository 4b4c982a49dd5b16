"""The ModelDeployment resource: pydantic models of its spec and status — the single source of truth.

``make crds`` turns these models into ``crds/modeldeployments.yaml`` (see ``crdgen.py``); rules the
OpenAPI schema can't state travel with each model as CEL ``x-kubernetes-validations`` with human
messages. Field names are camelCase on the wire, as Kubernetes users expect.
"""

from __future__ import annotations

from enum import StrEnum
from itertools import pairwise
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

from model_operator.durations import DURATION_PATTERN, parse_duration

GROUP = "modelrollout.io"
VERSION = "v1alpha1"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"
SHORT_NAMES = ["md", "mdeploy"]
DIGEST_PATTERN = r"^sha256:[a-f0-9]{64}$"
RECENT_ANALYSIS_LIMIT = 10


def cel(rule: str, message: str) -> JsonDict:
    return {"rule": rule, "message": message}


class Model(BaseModel):
    """Base for every CRD model: camelCase aliases, unknown fields refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    def wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


Duration = str


class ModelRef(Model):
    """Which model bundle to serve, pinned by digest."""

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63, description="Model name (model.json).")
    version: str = Field(
        pattern=r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,62}$", description="Model version (model.json); a label value."
    )
    uri: str = Field(
        pattern=r"^(https?|file)://.+", max_length=2048, description="Bundle directory URI: http(s):// or file://."
    )
    digest: str = Field(pattern=DIGEST_PATTERN, description="sha256 of the model file; the server refuses others.")
    format: Literal["skops", "joblib"] = Field(default="skops", description="joblib needs trustPickle.")
    trust_pickle: bool = Field(default=False, description="Allow a joblib/pickle bundle (it can run code).")

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("self.format != 'joblib' || self.trustPickle", "format joblib requires trustPickle: true")
            ]
        }
    )

    def same_artifact(self, other: ModelRef | None) -> bool:
        return other is not None and self.digest == other.digest and self.version == other.version


class Pause(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.duration) || duration(self.duration) > duration('0s')",
                    "durations must be greater than 0",
                )
            ]
        }
    )

    duration: Duration | None = Field(
        default=None, pattern=DURATION_PATTERN, description="Wait this long; absent means until promoted."
    )

    @field_validator("duration")
    @classmethod
    def positive(cls, value: str | None) -> str | None:
        if value is not None and parse_duration(value) <= 0:
            raise ValueError("pause duration must be greater than 0")
        return value


class CanaryStep(Model):
    """Exactly one of ``setWeight`` and ``pause``."""

    set_weight: int | None = Field(default=None, ge=1, le=100, description="Canary share of traffic, percent.")
    pause: Pause | None = None

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("has(self.setWeight) != has(self.pause)", "each step is either setWeight or pause, not both")
            ]
        }
    )

    @model_validator(mode="after")
    def exactly_one(self) -> CanaryStep:
        if (self.set_weight is None) == (self.pause is None):
            raise ValueError("each step is either setWeight or pause, not both")
        return self


_WEIGHTS = "self.steps.filter(s, has(s.setWeight)).map(s, s.setWeight)"
DEFAULT_STEPS = [
    CanaryStep(set_weight=5),
    CanaryStep(pause=Pause(duration="30s")),
    CanaryStep(set_weight=25),
    CanaryStep(pause=Pause(duration="30s")),
    CanaryStep(set_weight=50),
    CanaryStep(pause=Pause(duration="30s")),
    CanaryStep(set_weight=100),
]


class CanaryStrategy(Model):
    steps: list[CanaryStep] = Field(default_factory=lambda: list(DEFAULT_STEPS), min_length=1, max_length=50)

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    f"{_WEIGHTS}.size() > 0 && {_WEIGHTS}[{_WEIGHTS}.size() - 1] == 100",
                    "the last setWeight step must be 100",
                ),
                cel(f"{_WEIGHTS}.all(i, v, i == 0 || {_WEIGHTS}[i - 1] < v)", "setWeight values must rise strictly"),
            ]
        }
    )

    @model_validator(mode="after")
    def weights_rise_to_100(self) -> CanaryStrategy:
        weights = [s.set_weight for s in self.steps if s.set_weight is not None]
        if not weights or weights[-1] != 100:
            raise ValueError("the last setWeight step must be 100")
        if any(b <= a for a, b in pairwise(weights)):
            raise ValueError(f"setWeight values must rise strictly, got {weights}")
        return self

    @property
    def weights(self) -> list[int]:
        return [s.set_weight for s in self.steps if s.set_weight is not None]


class BlueGreenStrategy(Model):
    """A full-size preview next to stable, judged off live traffic, then one instant switch.

    The preview Deployment and its ``<md>-preview`` Service get no live traffic: analysis judges what
    reaches the preview Service (smoke tests, shadow clients, QA). After the switch the old version stays
    up for ``scaleDownDelay`` while analysis keeps guarding: a rollback then is an instant switch back.
    """

    auto_promote: bool = Field(
        default=True,
        description="Switch once the preview passes analysis; false: hold until `modelrollout promote`.",
    )
    preview_replicas: int | None = Field(
        default=None, ge=1, le=1000, description="Preview pods before the switch (default: replicas); full size at it."
    )
    passing_analyses: int = Field(
        default=2, ge=1, le=100, description="Passing analyses in a row the preview needs before the switch."
    )
    scale_down_delay: Duration = Field(
        default="30s",
        pattern=DURATION_PATTERN,
        description="How long the old version stays up after the switch, guarded by analysis (instant rollback).",
    )


class ShadowStrategy(Model):
    """The candidate gets a copy of live requests (its answers are discarded), then goes live if it passed."""

    mirror_percent: int = Field(
        default=100, ge=1, le=100, description="Share of live requests copied to the candidate, percent."
    )
    passing_analyses: int = Field(
        default=3, ge=1, le=100, description="Passing analyses in a row on mirrored traffic before going live."
    )
    then: Literal["Canary", "BlueGreen"] = Field(
        default="Canary",
        description="How a passing shadow goes live: the canary steps, or one switch guarded for "
        "blueGreen.scaleDownDelay.",
    )


class Strategy(Model):
    type: Literal["Canary", "BlueGreen", "Shadow"] = Field(
        default="Canary",
        description="Canary: weighted steps; BlueGreen: preview then one switch; Shadow: mirrored traffic first.",
    )
    canary: CanaryStrategy = Field(default_factory=CanaryStrategy)
    blue_green: BlueGreenStrategy = Field(default_factory=BlueGreenStrategy)
    shadow: ShadowStrategy = Field(default_factory=ShadowStrategy)


class ParentRef(Model):
    name: str
    namespace: str | None = None
    section_name: str | None = None


class GatewayAPITraffic(Model):
    parent_refs: list[ParentRef] = Field(default_factory=list, description="Gateways the HTTPRoute attaches to.")
    hostnames: list[str] = Field(default_factory=list)


class IstioTraffic(Model):
    hosts: list[str] = Field(
        default_factory=list,
        description="VirtualService hosts; default: the root Service's <name>.<namespace>.svc.cluster.local.",
    )
    gateways: list[str] = Field(
        default_factory=list, description="Istio Gateways (<namespace>/<name>) to bind; default: the mesh only."
    )


class Traffic(Model):
    provider: Literal["gatewayAPI", "istio", "replicas"] = Field(
        default="gatewayAPI",
        description=(
            "gatewayAPI: HTTPRoute weights; istio: VirtualService weights; replicas: weight ≈ the canary's share "
            "of pods, each track keeping at least one pod below 100% (so replicas: 1 gives the canary a second pod). "
            "On a change, the old provider's route is removed once the new one's carries the traffic."
        ),
    )
    gateway_api: GatewayAPITraffic = Field(default_factory=GatewayAPITraffic, alias="gatewayAPI")
    istio: IstioTraffic = Field(default_factory=IstioTraffic, description="Used when provider is istio.")


class SLO(Model):
    max_error_rate: float = Field(default=0.01, ge=0, le=1, description="Largest tolerated 5xx share of requests.")
    max_latency_p95: Duration | None = Field(default="250ms", pattern=DURATION_PATTERN)
    max_latency_p99: Duration | None = Field(default=None, pattern=DURATION_PATTERN)


class CompareToStable(Model):
    """The canary judged against stable on the same window (``analysis/statistics.py``), on evidence.

    Each comparison is on when its limit is set. A comparison fails only when the data make a regression
    likely at ``confidence``, passes only when they make the opposite as likely, and is inconclusive (the
    canary holds at its step) in between — thin evidence never promotes a canary. Not run while the candidate
    takes all live traffic (a 100% step, a blue-green switch): stable then serves nothing to compare with.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.errorRateMargin) || has(self.latencyRatio) || has(self.predictionDrift)",
                    "compareToStable needs at least one of errorRateMargin, latencyRatio, predictionDrift",
                ),
                cel(
                    "self.confidence > 0.5 && self.confidence < 1.0",
                    "confidence is a probability between 0.5 and 1 (exclusive), such as 0.95 or 0.99",
                ),
                cel(
                    "!has(self.errorRateMargin) || (self.errorRateMargin >= 0.0 && self.errorRateMargin < 1.0)",
                    "errorRateMargin is an absolute error-rate difference: at least 0 and below 1 (0.005 = 0.5 points)",
                ),
                cel(
                    "!has(self.latencyRatio) || self.latencyRatio >= 1.0",
                    "latencyRatio must be at least 1: it is how many times stable's p95 the canary's p95 may reach",
                ),
                cel(
                    "!has(self.predictionDrift) || self.predictionDrift > 0.0",
                    "predictionDrift is a PSI limit and must be greater than 0 (0.1 small shift, 0.25 large)",
                ),
            ]
        }
    )

    error_rate_margin: float | None = Field(
        default=None,
        ge=0,
        lt=1,
        description="Fail when the canary's 5xx rate likely exceeds stable's by more than this (absolute: 0.005).",
    )
    latency_ratio: float | None = Field(
        default=None, ge=1, le=1000, description="Fail when the canary's p95 likely exceeds this many times stable's."
    )
    prediction_drift: float | None = Field(
        default=None,
        gt=0,
        le=100,
        description="Fail when the PSI of the canary's predicted-class shares against stable's exceeds this.",
    )
    confidence: float = Field(
        default=0.95, gt=0.5, lt=1, description="Posterior probability (or significance) a verdict needs."
    )
    min_samples: int = Field(
        default=100,
        ge=1,
        le=1_000_000,
        description="Latency observations and predicted rows each track needs in the window; fewer is inconclusive.",
    )

    @model_validator(mode="after")
    def something_to_compare(self) -> CompareToStable:
        if self.error_rate_margin is None and self.latency_ratio is None and self.prediction_drift is None:
            raise ValueError("compareToStable needs at least one of errorRateMargin, latencyRatio, predictionDrift")
        return self


class MetricCheck(Model):
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    query: str = Field(
        min_length=1,
        max_length=4096,
        description="PromQL returning one number; {{namespace}} and {{name}} (this ModelDeployment's), {{model}}, "
        "{{canary_version}}, {{stable_version}}, {{window}} and {{track}} (the candidate's: canary, or preview "
        "under BlueGreen) are filled in.",
    )
    min: float | None = None
    max: float | None = None

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("has(self.min) || has(self.max)", "a metric check needs min, max or both"),
                cel("!has(self.min) || !has(self.max) || self.min <= self.max", "min must not exceed max"),
            ]
        }
    )


class PrometheusConfig(Model):
    address: str = Field(
        default="http://prometheus-operated.monitoring.svc:9090", pattern=r"^https?://.+", max_length=2048
    )


class Analysis(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "duration(self.interval) > duration('0s') && duration(self.window) > duration('0s')",
                    "durations must be greater than 0",
                )
            ]
        }
    )

    interval: Duration = Field(
        default="20s",
        pattern=DURATION_PATTERN,
        description="Time between analyses (two failed 20 s analyses keep rollback under 60 s).",
    )
    window: Duration = Field(default="1m", pattern=DURATION_PATTERN, description="PromQL rate window.")
    failure_limit: int = Field(default=2, ge=1, le=100, description="Failed analyses in a row before rollback.")
    min_requests: int = Field(default=20, ge=0, description="Fewer canary requests in the window is inconclusive.")
    inconclusive_limit: int = Field(
        default=10, ge=1, le=1000, description="Inconclusive analyses in a row before onNoData applies."
    )
    on_no_data: Literal["pause", "rollback", "continue"] = Field(
        default="pause", description="What to do when metrics are missing: pause (hold), rollback, continue."
    )
    prometheus: PrometheusConfig = Field(default_factory=PrometheusConfig)
    slo: SLO = Field(default_factory=SLO)
    compare_to_stable: CompareToStable | None = Field(
        default=None, description="Canary-vs-stable comparisons on evidence; off when absent."
    )
    max_input_drift: float | None = Field(
        default=None,
        gt=0,
        le=100,
        description="Fail when the canary's largest per-feature input PSI against the training reference exceeds this.",
    )
    metrics: list[MetricCheck] = Field(default_factory=list, max_length=20)

    @field_validator("interval", "window")
    @classmethod
    def positive(cls, value: str) -> str:
        if parse_duration(value) <= 0:
            raise ValueError("must be greater than 0")
        return value


ROUTED_STRATEGIES_RULE = (  # absent fields take their defaults (Canary, gatewayAPI)
    "!has(self.strategy) || !has(self.strategy.type) || self.strategy.type == 'Canary' || "
    "!has(self.traffic) || !has(self.traffic.provider) || self.traffic.provider != 'replicas'"
)
ROUTED_STRATEGIES_MESSAGE = (
    "strategy.type BlueGreen and Shadow need traffic.provider gatewayAPI or istio: the replicas provider "
    "can neither keep a preview off live traffic nor mirror requests"
)


class ModelDeploymentSpec(Model):
    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [cel(ROUTED_STRATEGIES_RULE, ROUTED_STRATEGIES_MESSAGE)]}
    )

    model: ModelRef
    image: str = Field(min_length=1, max_length=1024, description="Model-server image; pin it by digest.")
    replicas: int = Field(
        default=2,
        ge=1,
        le=1000,
        description="Pods of the stable model. A candidate's pods come in addition, except with traffic.provider "
        "replicas, where they are shared out by weight (each track keeps at least one pod while both get traffic).",
    )
    port: int = Field(default=8080, ge=1024, le=65535)
    resources: dict[str, dict[str, str]] = Field(
        default_factory=lambda: {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}}
    )
    env: list[dict[str, str]] = Field(default_factory=list)
    strategy: Strategy = Field(default_factory=Strategy)
    traffic: Traffic = Field(default_factory=Traffic)
    analysis: Analysis = Field(default_factory=Analysis)

    @model_validator(mode="after")
    def routed_strategies(self) -> ModelDeploymentSpec:
        if self.strategy.type != "Canary" and self.traffic.provider == "replicas":
            raise ValueError(ROUTED_STRATEGIES_MESSAGE)
        return self


class Phase(StrEnum):
    """Where a rollout is. Allowed transitions live in ``rollout.machine.TRANSITIONS``."""

    INITIALIZING = "Initializing"
    """First model of this resource: deploying it as stable, no analysis."""
    PROGRESSING = "Progressing"
    """A canary is receiving a step's weight and being analysed."""
    PAUSED = "Paused"
    """Held: by a pause step without duration, by the pause annotation, or by missing metrics."""
    PROMOTING = "Promoting"
    """The canary passed every step; it is becoming stable (100% weight, stable Deployment updated)."""
    SUCCEEDED = "Succeeded"
    """The spec's model is stable and takes all traffic."""
    ROLLING_BACK = "RollingBack"
    """Analysis failed or the rollout was aborted; traffic is returning to stable."""
    ROLLED_BACK = "RolledBack"
    """Stable takes all traffic again; the canary stays down until the spec changes or retry."""
    FAILED = "Failed"
    """Nothing can be done without a new spec (e.g. the model can't be served at all)."""


class Verdict(StrEnum):
    PASS = "Pass"  # noqa: S105 - a verdict, not a password
    FAIL = "Fail"
    INCONCLUSIVE = "Inconclusive"
    ERROR = "Error"


class CheckResult(Model):
    """One analysis check, kept in status so `kubectl get -o yaml` shows why a rollout moved."""

    time: str
    check: str
    verdict: Verdict
    value: float | None = None
    limit: str | None = None
    query: str | None = None
    message: str | None = None


class Condition(Model):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: str
    observed_generation: int | None = None


class ModelDeploymentStatus(Model):
    phase: Phase | None = None
    message: str | None = None
    observed_generation: int | None = None
    stable: ModelRef | None = None
    canary: ModelRef | None = None
    stable_version: str | None = Field(default=None, description="For printer columns.")
    canary_version: str | None = Field(default=None, description="For printer columns.")
    canary_weight: int = Field(default=0, ge=0, le=100, description="Live traffic share of the candidate.")
    mirror_percent: int = Field(default=0, ge=0, le=100, description="Share of live requests copied to it.")
    canary_capacity: int = Field(
        default=0, ge=0, le=100, description="Traffic share the candidate's pods are sized for (set before weight)."
    )
    strategy: str | None = Field(default=None, description="strategy.type the running candidate started with.")
    current_step: int = Field(default=0, ge=0)
    step_entered: bool = Field(default=False, description="The current step's routing is applied.")
    step_passes: int = Field(default=0, ge=0, description="Passing analyses in a row at the current step.")
    step_started_at: str | None = None
    last_analysis_at: str | None = None
    consecutive_failures: int = 0
    consecutive_inconclusive: int = 0
    first_failure_at: str | None = Field(default=None, description="Start of the failing streak (rollback timing).")
    rollback_started_at: str | None = None
    aborted: bool = False
    paused_by_user: bool = False
    traffic_note: str | None = None
    traffic_provider: str | None = Field(
        default=None,
        description="traffic.provider whose route carries the traffic; after a change of provider the old one's "
        "route is removed once the new one's is confirmed.",
    )
    handled_commands: dict[str, str] = Field(
        default_factory=dict, description="Last handled stamp per command annotation, so each runs once."
    )
    reconcile_error: str | None = Field(
        default=None,
        description="Why the operator's last tick of this object failed (its metric provider broke, the tick ran "
        "past its deadline, the spec is invalid); also a Warning Event. Cleared by the next tick that completes.",
    )
    analysis: list[CheckResult] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)

    model_config = ConfigDict(extra="ignore")
