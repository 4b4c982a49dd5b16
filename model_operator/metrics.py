"""The operator's own Prometheus metrics (``modelrollout_*``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from model_operator.spec import Phase

ROLLBACK_BUCKETS = (1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600)


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        labels = ("namespace", "name")
        self.phase = Gauge("modelrollout_phase", "1 for the current phase of each ModelDeployment.",
                           (*labels, "phase"), registry=self.registry)  # fmt: skip
        self.weight = Gauge("modelrollout_canary_weight", "Live traffic weight of the candidate, percent.", labels,
                            registry=self.registry)  # fmt: skip
        self.mirror = Gauge("modelrollout_mirror_percent", "Share of live requests mirrored to a shadow, percent.",
                            labels, registry=self.registry)  # fmt: skip
        self.analysis = Counter("modelrollout_analysis_results", "Analysis checks by verdict.",
                                (*labels, "check", "verdict"), registry=self.registry)  # fmt: skip
        self.transitions = Counter("modelrollout_transitions", "Phase transitions.", (*labels, "phase"),
                                   registry=self.registry)  # fmt: skip
        self.leader = Gauge(
            "modelrollout_leader", "1 while this replica holds the leader Lease and acts; 0 while it waits.",
            registry=self.registry,
        )  # fmt: skip
        self.rollback_seconds = Histogram(
            "modelrollout_rollback_duration_seconds",
            "From the first failed analysis (or abort) to canary weight 0.",
            labels, buckets=ROLLBACK_BUCKETS, registry=self.registry,
        )  # fmt: skip

    def ensure_series(self, namespace: str, name: str) -> None:
        """Create this ModelDeployment's counters and histogram at zero: a series born at 1 on the first
        rollback is invisible to ``increase()``, so the first rollback would never show or alert."""
        for candidate in Phase:
            self.transitions.labels(namespace, name, candidate.value)
        self.rollback_seconds.labels(namespace, name)

    def set_phase(self, namespace: str, name: str, phase: Phase | None) -> None:
        for candidate in Phase:
            self.phase.labels(namespace, name, candidate.value).set(1 if candidate is phase else 0)
