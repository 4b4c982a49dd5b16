"""``run_once``, the one tick and its one error policy (kopf, the demo and the test fakes all call it), on the
demo's in-memory API with model-server stand-ins; the guard the reconciler puts around a provider; the tick's
own analysis counted in the metrics. The policy's timing, pure: test_schedule.py."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from model_operator.analysis.base import MetricProvider, ProviderError, ProviderFault
from model_operator.analysis.guard import Guarded
from model_operator.analysis.prometheus import PrometheusProvider
from model_operator.deadline import Deadline, DeadlineExceeded
from model_operator.metrics import OperatorMetrics
from model_operator.reconcile import Reconciler
from model_operator.schedule import Failure
from model_operator.spec import RECENT_ANALYSIS_LIMIT, ModelDeploymentStatus, Phase, Verdict
from model_operator.tick import TickOutcome, run_once
from modelrollout.demo.local_kube import LocalKube
from modelrollout.demo.settings import FAST
from modelrollout.demo.story import model_deployment
from tests.unit.demo.fakes import TIMINGS, V1, V2, Healthy, Operator

NS, NAME = "demo", "iris"


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


class Scripted:
    """A provider that answers like ``Healthy`` after ``action`` ran for each query (raise, move a clock)."""

    name = "scripted"

    def __init__(self, action: Callable[[str], None] = lambda query: None) -> None:
        self.action = action
        self.asked: list[str] = []

    def query(self, promql: str) -> float | None:
        self.asked.append(promql)
        self.action(promql)
        return Healthy().query(promql)

    def is_online(self) -> bool:
        return True


def canary_at_first_step(**analysis: Any) -> Operator:
    """v1 stable, v2 a canary at its first step (5 %), an analysis due at the next tick."""
    operator = Operator()
    operator.kube.apply(model_deployment(V1, FAST, None))
    while operator.tick().phase is not Phase.SUCCEEDED:
        pass
    body = model_deployment(V2, FAST, None)
    body["spec"]["analysis"].update(analysis)
    operator.kube.apply(body)
    status = operator.tick()
    while not (status.step_entered and status.canary_weight == 5):
        status = operator.tick()
    return operator


def tick(
    operator: Operator, provider: MetricProvider, failures: int = 0, clock: Clock | None = None
) -> tuple[TickOutcome, Reconciler]:
    reconciler = Reconciler(operator.kube, lambda spec, deadline: provider, OperatorMetrics())
    later = operator.now + dt.timedelta(seconds=5)
    return run_once(reconciler, NS, NAME, TIMINGS, failures, later, clock or Clock()), reconciler


def stored(kube: LocalKube) -> ModelDeploymentStatus:
    body = kube.get("modelrollout.io/v1alpha1", "ModelDeployment", NS, NAME)
    assert body is not None
    return ModelDeploymentStatus.model_validate(body["status"])


def warnings(kube: LocalKube) -> list[tuple[str, str]]:
    return [(e["reason"], e["message"]) for e in kube.events() if e["type"] == "Warning"]


# --- provider failures ----------------------------------------------------------------------------------


def test_a_provider_that_breaks_fails_the_tick_with_the_reason_in_status_and_one_event() -> None:
    """Before, anything but ProviderError escaped the tick and killed the daemon; nothing said why."""
    operator = canary_at_first_step()
    before = stored(operator.kube)

    def broken(query: str) -> None:
        raise KeyError("value")

    outcome, _ = tick(operator, Scripted(broken))
    assert outcome.failure is Failure.PROVIDER and outcome.failures == 1
    assert outcome.reason == "analysis failed: the scripted metric provider failed: KeyError: 'value'"
    assert outcome.next_in == TIMINGS.active, "requeued"
    after = stored(operator.kube)
    assert after.reconcile_error == outcome.reason
    assert warnings(operator.kube)[-1] == ("MetricProviderFailed", outcome.reason)
    assert after.model_copy(update={"reconcile_error": None}) == before, "nothing else moved; nothing counted"

    events = len(operator.kube.events())
    again, _ = tick(operator, Scripted(broken), failures=outcome.failures)
    assert again.failure is Failure.PROVIDER and again.failures == 2 and again.next_in == 2 * TIMINGS.active
    assert len(operator.kube.events()) == events and again.events == (), "a lasting failure is posted once"

    healed, _ = tick(operator, Scripted(), failures=again.failures)
    assert healed.failure is None and healed.failures == 0 and healed.result is not None
    assert stored(operator.kube).reconcile_error is None, "cleared by the tick that completes"
    assert healed.result.analysis is not None and healed.result.analysis.verdict is Verdict.PASS


def test_a_provider_error_outside_the_checks_is_reported_too() -> None:
    operator = canary_at_first_step()
    reconciler = Reconciler(operator.kube, no_provider, OperatorMetrics())
    outcome = run_once(reconciler, NS, NAME, TIMINGS, 0, operator.now + dt.timedelta(seconds=5))
    assert outcome.failure is Failure.PROVIDER and outcome.reason == "analysis failed: no provider for that address"
    assert stored(operator.kube).reconcile_error == outcome.reason


def no_provider(spec: object, deadline: Deadline) -> MetricProvider:
    raise ProviderError("no provider for that address")


def test_an_html_answer_is_an_error_verdict_and_the_tick_completes() -> None:
    """The review's case end to end: a proxy's login page where Prometheus should be."""
    operator = canary_at_first_step()
    page = httpx.Response(200, text="<html>Sign in</html>", headers={"content-type": "text/html"})
    client = httpx.Client(transport=httpx.MockTransport(lambda request: page))
    outcome, _ = tick(operator, PrometheusProvider("http://proxy", client, retries=0))
    assert outcome.failure is None and outcome.result is not None and outcome.result.analysis is not None
    (check,) = outcome.result.analysis.results
    assert check.verdict is Verdict.ERROR and "HTTP 200 (text/html)" in (check.message or "")
    assert "not a Prometheus API root" in (check.message or "")
    assert stored(operator.kube).consecutive_inconclusive == 1, "an Error counts as inconclusive, as before"


# --- the deadline ---------------------------------------------------------------------------------------


def test_a_provider_past_the_deadline_fails_the_tick_and_is_asked_nothing_more() -> None:
    operator = canary_at_first_step()
    clock = Clock()

    def hangs(query: str) -> None:
        clock.now += TIMINGS.deadline + 1

    provider = Scripted(hangs)
    before = stored(operator.kube)
    outcome, _ = tick(operator, provider, clock=clock)
    assert outcome.failure is Failure.DEADLINE and outcome.next_in == TIMINGS.active
    assert outcome.reason is not None and "ran past its 10s deadline before a query" in outcome.reason
    assert len(provider.asked) == 1, "no query after the deadline"
    assert warnings(operator.kube)[-1] == ("TickDeadlineExceeded", outcome.reason)
    after = stored(operator.kube)
    assert after.last_analysis_at == before.last_analysis_at and after.analysis == before.analysis, "not counted"


def test_an_analysis_that_ends_past_the_deadline_is_not_counted() -> None:
    operator = canary_at_first_step(minRequests=5000)  # the first check is inconclusive: the analysis ends there
    clock = Clock()

    def slow(query: str) -> None:
        clock.now += TIMINGS.deadline + 1

    outcome, _ = tick(operator, Scripted(slow), clock=clock)
    assert outcome.failure is Failure.DEADLINE
    assert outcome.reason is not None and "deadline during the analysis" in outcome.reason
    assert stored(operator.kube).consecutive_inconclusive == 0


# --- the Kubernetes API, gone objects, bad specs, bugs -------------------------------------------------


class FailingKube(LocalKube):
    def __init__(self, error: Exception) -> None:
        super().__init__(lambda *args: None)  # type: ignore[arg-type, return-value]
        self.error = error

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        raise self.error


@pytest.mark.parametrize("error", [ApiException(status=500), urllib3.exceptions.ReadTimeoutError(None, "", "x")])
def test_api_errors_are_logged_and_retried_with_backoff(error: Exception, caplog: pytest.LogCaptureFixture) -> None:
    kube = FailingKube(error)
    reconciler = Reconciler(kube, lambda spec, deadline: Healthy(), OperatorMetrics())
    outcomes = [run_once(reconciler, NS, NAME, TIMINGS, failures) for failures in range(4)]
    assert [o.next_in for o in outcomes] == [1.0, 2.0, 4.0, 8.0]
    assert {o.failure for o in outcomes} == {Failure.API} and [o.failures for o in outcomes] == [1, 2, 3, 4]
    assert kube.events() == [] and "failed on the Kubernetes API" in caplog.text


def test_a_gone_object_stops_the_loop() -> None:
    reconciler = Reconciler(Operator().kube, lambda spec, deadline: Healthy(), OperatorMetrics())
    assert run_once(reconciler, NS, NAME, TIMINGS).next_in is None


def test_an_invalid_spec_fails_the_resource_once_and_waits_for_a_new_one() -> None:
    operator = Operator()
    body = model_deployment(V1, FAST, None)
    body["spec"]["replicas"] = -1
    operator.kube.apply(body)
    outcome = run_once(operator.reconciler, NS, NAME, TIMINGS)
    assert outcome.failure is Failure.INVALID_SPEC and outcome.next_in == TIMINGS.idle
    status = stored(operator.kube)
    assert status.phase is Phase.FAILED and status.message == status.reconcile_error == outcome.reason
    assert outcome.reason is not None and outcome.reason.startswith("replicas: Input should be greater")
    assert warnings(operator.kube) == [("InvalidSpec", outcome.reason)]
    run_once(operator.reconciler, NS, NAME, TIMINGS)
    assert len(operator.kube.events()) == 1


def test_a_bug_is_not_policy_it_propagates() -> None:
    operator = canary_at_first_step()

    def bug(spec: object, deadline: Deadline) -> MetricProvider:
        raise RuntimeError("a bug")

    reconciler = Reconciler(operator.kube, bug, OperatorMetrics())
    with pytest.raises(RuntimeError, match="a bug"):
        run_once(reconciler, NS, NAME, TIMINGS, 0, operator.now + dt.timedelta(seconds=5))


# --- the tick's own analysis ---------------------------------------------------------------------------


def test_every_check_of_the_ticks_own_analysis_is_counted_once() -> None:
    """Found by the outcome the tick carries, not by comparing timestamps: the status keeps only the last
    ten results, and an analysis may have more."""
    custom = [{"name": f"custom-{i}", "query": f"custom_{i}", "max": 1} for i in range(12)]
    operator = canary_at_first_step(metrics=custom)
    outcome, reconciler = tick(operator, Scripted())
    assert outcome.result is not None and outcome.result.analysis is not None
    checks = outcome.result.analysis.results
    assert len(checks) == 15 > RECENT_ANALYSIS_LIMIT == len(stored(operator.kube).analysis)
    registry = reconciler.metrics.registry
    counted = {
        c.check: registry.get_sample_value(
            "modelrollout_analysis_results_total",
            {"namespace": NS, "name": NAME, "check": c.check, "verdict": c.verdict.value},
        )
        for c in checks
    }
    assert counted == {c.check: 1.0 for c in checks}


# --- the guard around a provider ------------------------------------------------------------------------


def test_the_guard_turns_anything_but_provider_errors_into_faults() -> None:
    def raising(error: Exception) -> Guarded:
        def act(query: str) -> None:
            raise error

        return Guarded(Scripted(act), Deadline.unlimited())

    with pytest.raises(ProviderFault, match="the scripted metric provider failed: ValueError: bad"):
        raising(ValueError("bad")).query("q")
    with pytest.raises(ProviderError, match="down") as kept:
        raising(ProviderError("down")).query("q")
    assert not isinstance(kept.value, ProviderFault)
    with pytest.raises(ProviderError, match="cannot answer with one number per label"):
        Guarded(Scripted(), Deadline.unlimited()).query_vector("sum by (le) (x)")
    assert Guarded(Scripted(), Deadline.unlimited()).query("p95_latency") == 0.001


def test_the_guard_asks_nothing_once_the_deadline_passed() -> None:
    clock = Clock()
    provider = Scripted()
    guarded = Guarded(provider, Deadline(1.0, clock.now - 1.0, clock))
    with pytest.raises(DeadlineExceeded, match="1s deadline before a query to the scripted provider"):
        guarded.query("q")
    assert provider.asked == []
