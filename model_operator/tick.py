"""``run_once``: one tick of one ModelDeployment with the one error policy, and when to run the next.

kopf's daemon, the demo and the test fakes all call it; none has an error policy of its own. It reads the
object, runs ``Reconciler.tick`` within the tick's deadline, posts the tick's Events, and turns each failure
into what ``schedule.Failure`` says: the Kubernetes API failing is logged and retried with backoff; a
provider failing outside its checks, the deadline passing, or an invalid spec goes to
``.status.reconcileError`` and a Warning Event (once per distinct reason, so a failure that lasts writes
nothing more) and is retried. Anything else is a bug and propagates.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from model_operator.analysis.base import ProviderError, ProviderFault
from model_operator.deadline import Deadline, DeadlineExceeded
from model_operator.kube.client import Kube
from model_operator.reconcile import API_VERSION, Reconciler, TickResult
from model_operator.rollout.types import Event
from model_operator.schedule import Failure, TickTimings, after_failure, next_tick
from model_operator.spec import KIND, ModelDeploymentStatus, Phase

API_ERRORS: tuple[type[Exception], ...] = (ApiException, urllib3.exceptions.HTTPError)
"""What the Kubernetes client raises when the API fails or times out."""
SETTLED = frozenset({Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.FAILED})
Logger = logging.Logger | logging.LoggerAdapter[Any]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TickOutcome:
    next_in: float | None
    """Seconds until the next tick; None when the object is gone or being deleted: stop."""
    status: ModelDeploymentStatus | None = None
    """The status as the tick left it (on failure: as read, with the failure recorded; None if unknown)."""
    result: TickResult | None = None
    """The completed tick (None when it failed): its decision, Events and own analysis."""
    failure: Failure | None = None
    reason: str | None = None
    """Why it failed, as written to ``.status.reconcileError`` and the Event (or logged)."""
    failures: int = 0
    """Failed ticks in a row, this one included: pass it to the next ``run_once`` (the backoff's exponent)."""
    events: tuple[Event, ...] = ()
    """The Events this tick posted, in order."""


def run_once(
    reconciler: Reconciler,
    namespace: str,
    name: str,
    timings: TickTimings,
    failures: int = 0,
    now: dt.datetime | None = None,
    clock: Callable[[], float] = time.monotonic,
    logger: Logger = log,
) -> TickOutcome:
    """One tick of ``namespace/name``. ``failures``: the previous outcome's; ``now``: the tick's time for the
    state machine (default: the wall clock); ``clock``: the deadline's (monotonic)."""
    kube = reconciler.kube
    deadline = Deadline.start(timings.deadline, clock)
    try:
        body = kube.get(API_VERSION, KIND, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return TickOutcome(None)
        try:
            result = reconciler.tick(body, now or dt.datetime.now(dt.UTC), deadline)
        except ValidationError as exc:
            failure, reason = Failure.INVALID_SPEC, _problems(exc)
        except DeadlineExceeded as exc:
            failure, reason = Failure.DEADLINE, f"{exc}; its analysis is not counted"
        except (ProviderError, ProviderFault) as exc:
            failure, reason = Failure.PROVIDER, f"analysis failed: {exc}"
            if isinstance(exc, ProviderFault):  # a provider's bug: the traceback helps whoever fixes it
                logger.warning("metric provider fault", exc_info=exc)
        else:
            for event in result.events:
                _post(kube, body, event, logger)
            settled = result.status.phase in SETTLED
            delay = next_tick(timings, result.decision.requeue_after, settled)
            return TickOutcome(delay, result.status, result, events=tuple(result.events))
        logger.warning("tick failed (%s), retrying: %s", failure.value, reason)
        status, events = _report(kube, body, failure, reason, logger)
    except API_ERRORS as exc:
        delay = after_failure(timings, Failure.API, failures + 1)
        logger.warning("tick failed on the Kubernetes API, retrying in %.1fs: %s", delay, exc)
        return TickOutcome(delay, None, None, Failure.API, str(exc), failures + 1)
    delay = after_failure(timings, failure, failures + 1)
    return TickOutcome(delay, status, None, failure, reason, failures + 1, events)


def _report(
    kube: Kube, body: dict[str, Any], failure: Failure, reason: str, logger: Logger
) -> tuple[ModelDeploymentStatus | None, tuple[Event, ...]]:
    """Write the failure to status and post its Event, unless status already says exactly this (a lasting
    failure is written once, not at every retry). The status as it now is, and the Events posted."""
    before: dict[str, Any] = body.get("status") or {}
    patch: dict[str, Any] = {"reconcileError": reason[:1000]}
    if failure is Failure.INVALID_SPEC:
        patch |= {"phase": Phase.FAILED.value, "message": reason[:1000]}
    events: tuple[Event, ...] = ()
    if any(before.get(key) != value for key, value in patch.items()):
        kube.patch_status(API_VERSION, KIND, body["metadata"]["namespace"], body["metadata"]["name"], patch)
        events = (Event(failure.value, reason, warning=True),)
        for event in events:
            _post(kube, body, event, logger)
    try:
        status = ModelDeploymentStatus.model_validate({**before, **patch})
    except ValidationError:
        status = None
    return status, events


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())


def _post(kube: Kube, obj: dict[str, Any], event: Event, logger: Logger) -> None:
    """Post ``event`` about ``obj``; an Event that cannot be posted is logged, never a failed tick."""
    (logger.warning if event.warning else logger.info)("%s: %s", event.reason, event.message)
    try:
        kube.create_event(obj, event.reason, event.message, event.warning)
    except API_ERRORS as exc:
        logger.warning("could not post event %s: %s", event.reason, exc)
