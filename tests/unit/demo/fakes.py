"""Fakes for the local runtime: processes that are ready when told, a clock that moves when told, a
metrics provider that always looks healthy, and the operator's ``Reconciler`` ticking on ``LocalKube``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from model_operator.analysis.base import MetricProvider
from model_operator.metrics import OperatorMetrics
from model_operator.reconcile import Reconciler
from model_operator.schedule import TickTimings
from model_operator.spec import ModelDeploymentStatus, ModelRef
from model_operator.tick import run_once
from modelrollout.demo.local_kube import LocalKube
from modelrollout.demo.router import LocalRouter


def ref(version: str, digest: str) -> ModelRef:
    return ModelRef(name="iris", version=version, uri=f"file:///b/{version}/", digest="sha256:" + digest * 64)


V1, V2 = ref("1.0.0", "1"), ref("2.0.0", "2")
TIMINGS = TickTimings(active=1.0, idle=1.0, deadline=10.0)


@dataclass
class FakePod:
    url: str
    labels: Mapping[str, str]
    ready: bool = False
    code: int | None = None
    signals: list[str] = field(default_factory=list)

    def probe_ready(self) -> bool:
        return self.ready

    def exit_code(self) -> int | None:
        return self.code

    def terminate(self) -> None:
        self.signals.append("TERM")

    def kill(self) -> None:
        self.signals.append("KILL")

    def wait(self, timeout: float) -> None:
        self.code = 0 if self.code is None else self.code

    def last_log_line(self) -> str:
        return "boom"


@dataclass
class FakeFactory:
    pods: list[FakePod] = field(default_factory=list)
    ready_at_once: bool = False

    def __call__(self, name: str, args: Sequence[str], env: Mapping[str, str], labels: Mapping[str, str]) -> FakePod:
        assert "--port" in args and "--expected-digest" in args
        pod = FakePod(f"http://127.0.0.1:{9000 + len(self.pods)}", dict(labels), ready=self.ready_at_once)
        self.pods.append(pod)
        return pod


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Healthy:
    """A provider whose candidate always looks good: plenty of requests, no errors, fast."""

    name = "fake"

    def query(self, promql: str) -> float | None:
        return 1000.0 if "increase" in promql else 0.001

    def is_online(self) -> bool:
        return True


class Operator:
    """The operator's ``run_once`` on a ``LocalKube`` whose processes are ready at once, with the local
    gateway following the route; every ``tick`` is one second later on the operator's clock, and a tick
    that fails fails the test."""

    def __init__(self) -> None:
        self.factory = FakeFactory(ready_at_once=True)
        self.kube = LocalKube(self.factory, termination_delay=0.0)  # replaced processes leave at the next pass
        provider: MetricProvider = Healthy()
        self.reconciler = Reconciler(self.kube, lambda spec, deadline: provider, OperatorMetrics())
        self.router = LocalRouter(self.kube, "demo", "iris")
        self.kube.subscribe(self.router.refresh)
        self.now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)

    def tick(self) -> ModelDeploymentStatus:
        outcome = run_once(self.reconciler, "demo", "iris", TIMINGS, now=self.now)
        assert outcome.failure is None and outcome.status is not None, outcome.reason
        self.kube.supervise()
        self.now += dt.timedelta(seconds=1)
        return outcome.status

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        return self.kube.get("v1" if kind == "Service" else "apps/v1", kind, "demo", name)
