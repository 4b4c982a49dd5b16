"""Leader election on a ``coordination.k8s.io/v1`` Lease, the way client-go's ``leaderelection`` does it.

kopf's peering pauses operators of lower priority but freezes everybody when priorities are equal, so it
cannot choose one of N identical replicas; a Lease can. The protocol, in short:

* Whoever holds the Lease renews ``renewTime`` every retry period. Anyone may take a Lease that is free
  (empty ``holderIdentity``) or expired (not renewed for ``leaseDurationSeconds``); writes carry the
  ``resourceVersion`` that was read, so of two candidates in the same round the API server lets exactly one
  win and answers the other ``409 Conflict``.
* A leader that could not renew for the renew deadline (shorter than the lease duration) gives up: it has
  stopped acting before any follower may consider its Lease expired.
* On a graceful shutdown the leader empties ``holderIdentity`` (and sets the duration to 1 s), so a
  follower takes over at its next attempt instead of waiting out the lease.

The decision is a pure function of the record and the clock (``decide``); ``LeaseElector`` only reads,
writes and waits.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import urllib3
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = (5, 10)  # (connect, read) seconds of every API call
LEASE_API_VERSION = "coordination.k8s.io/v1"


# --- pure ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeaseRecord:
    """What a Lease's spec says about its holder; ``holder_identity == ""`` means free."""

    holder_identity: str
    acquire_time: dt.datetime | None
    renew_time: dt.datetime | None
    lease_duration_seconds: int
    transitions: int = 0

    @property
    def free(self) -> bool:
        return not self.holder_identity

    def expires_at(self, observed_at: dt.datetime | None = None) -> dt.datetime | None:
        """When the lease runs out: the last renewal (or ``observed_at``) plus the holder's declared duration.

        None when the record says nothing about time (a lease never renewed counts as expired).
        """
        start = observed_at or self.renew_time or self.acquire_time
        return None if start is None else start + dt.timedelta(seconds=self.lease_duration_seconds)


def decide(
    current: LeaseRecord | None,
    identity: str,
    now: dt.datetime,
    duration_seconds: int,
    observed_at: dt.datetime | None = None,
) -> LeaseRecord | None:
    """The record to write to take or renew the lease at ``now``; None when someone else validly holds it.

    * no Lease yet: create it, ``transitions`` 0;
    * mine: renew (``renew_time`` = now; ``acquire_time`` and ``transitions`` kept);
    * free, or expired (``renew_time + its lease_duration_seconds < now``): take it, ``transitions`` + 1;
    * held by someone else and not expired: None.

    The expiry uses the duration the holder declared, not ours. ``observed_at`` (client-go's observedTime)
    is when the caller first saw this exact record, on the same clock as ``now``; when given, expiry is
    measured from it instead of ``renew_time``, which makes the decision immune to clock skew between the
    holder's machine and ours.
    """
    if duration_seconds < 1:
        raise ValueError(f"lease duration must be at least 1 s, got {duration_seconds}")
    if current is None:
        return LeaseRecord(identity, now, now, duration_seconds, 0)
    if current.holder_identity == identity:
        return replace(current, renew_time=now, lease_duration_seconds=duration_seconds)
    expires = current.expires_at(observed_at)
    if not current.free and expires is not None and not expires < now:
        return None
    return LeaseRecord(identity, now, now, duration_seconds, current.transitions + 1)


def released(current: LeaseRecord, now: dt.datetime) -> LeaseRecord:
    """The record a leader writes on a graceful exit: nobody holds it, and it would expire in 1 s anyway."""
    return LeaseRecord("", now, now, 1, current.transitions)


def micro_time(value: dt.datetime) -> str:
    """Kubernetes MicroTime (RFC 3339, always six fractional digits, UTC) — ``isoformat`` drops zero micros."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def record_from_lease(lease: Any) -> LeaseRecord:
    """The record in a ``V1Lease`` read by the python client."""
    spec = lease.spec
    if spec is None:
        return LeaseRecord("", None, None, 1, 0)
    return LeaseRecord(
        holder_identity=spec.holder_identity or "",
        acquire_time=_utc(spec.acquire_time),
        renew_time=_utc(spec.renew_time),
        lease_duration_seconds=max(1, int(spec.lease_duration_seconds or 1)),
        transitions=int(spec.lease_transitions or 0),
    )


def lease_body(
    name: str, namespace: str, record: LeaseRecord, resource_version: str | None = None, metadata: Any = None
) -> dict[str, Any]:
    """The Lease to create, or to replace optimistically (with the ``resource_version`` that was read).

    Labels and annotations of ``metadata`` (the object read) are kept: a replace writes the whole object.
    """
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if resource_version is not None:
        meta["resourceVersion"] = resource_version
    if metadata is not None:
        if metadata.labels:
            meta["labels"] = dict(metadata.labels)
        if metadata.annotations:
            meta["annotations"] = dict(metadata.annotations)
    spec: dict[str, Any] = {
        "holderIdentity": record.holder_identity,
        "leaseDurationSeconds": record.lease_duration_seconds,
        "leaseTransitions": record.transitions,
    }
    if record.acquire_time is not None:
        spec["acquireTime"] = micro_time(record.acquire_time)
    if record.renew_time is not None:
        spec["renewTime"] = micro_time(record.renew_time)
    return {"apiVersion": LEASE_API_VERSION, "kind": "Lease", "metadata": meta, "spec": spec}


# --- I/O -----------------------------------------------------------------------------------------------


class Outcome(enum.Enum):
    LEADING = "leading"  # we wrote the record: we hold the lease until renew_time + duration
    HELD = "held"  # someone else validly holds it
    CONFLICT = "conflict"  # someone else wrote between our read and our write (409): they won this round
    ERROR = "error"  # the API server could not be asked; try again


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class LeaseElector:
    """Acquire, hold and release one Lease with a ``CoordinationV1Api`` (the sync python client).

    Calls run on a small executor of their own rather than ``asyncio.to_thread``'s shared default pool:
    reconcile ticks borrow that pool (``asyncio.to_thread`` in the handlers), and a renewal queued behind a
    thousand slow ticks would cost the leadership. Every call carries ``_request_timeout``.
    """

    def __init__(
        self,
        api: Any,
        name: str,
        namespace: str,
        identity: str,
        *,
        lease_duration_seconds: int = 15,
        renew_deadline_seconds: float = 10.0,
        retry_period_seconds: float = 2.0,
        clock: Callable[[], dt.datetime] = _utcnow,
        request_timeout: tuple[float, float] = REQUEST_TIMEOUT,
    ) -> None:
        if not 0 < retry_period_seconds < renew_deadline_seconds < lease_duration_seconds:
            raise ValueError(
                "need 0 < retry period < renew deadline < lease duration, got "
                f"{retry_period_seconds} / {renew_deadline_seconds} / {lease_duration_seconds}"
            )
        self.api, self.name, self.namespace, self.identity = api, name, namespace, identity
        self.lease_duration_seconds = lease_duration_seconds
        self.renew_deadline_seconds = renew_deadline_seconds
        self.retry_period_seconds = retry_period_seconds
        self._clock = clock
        self._request_timeout = request_timeout
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="lease")
        self._observed: LeaseRecord | None = None
        self._observed_mono = 0.0  # monotonic time when ``_observed`` last changed (client-go's observedTime)
        self._renewed_mono = 0.0  # monotonic time of the start of our last successful write
        self.is_leader = False

    @property
    def holder(self) -> str:
        """The holder as last observed ("" = free or unknown)."""
        return self._observed.holder_identity if self._observed else ""

    @property
    def lease_ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    async def acquire(self, stop_event: asyncio.Event) -> bool:
        """Try every retry period until we lead (True) or ``stop_event`` is set (False).

        An attempt in flight is finished, not abandoned, when ``stop_event`` is set: a write that landed
        unseen would leave the lease held by a process that has gone. True with ``stop_event`` set means
        we became leader while being stopped — release.
        """
        log.info("%s: trying to acquire lease %s", self.identity, self.lease_ref)
        following = None
        while True:
            outcome = await self._attempt(renew_only=False)
            if outcome is Outcome.LEADING:
                self.is_leader = True
                log.info("%s: became leader (lease %s)", self.identity, self.lease_ref)
                return True
            if outcome is Outcome.HELD and self.holder != following:
                following = self.holder
                log.info("%s: lease %s is held by %s; following", self.identity, self.lease_ref, following)
            if await _wait(stop_event, self.retry_period_seconds):
                return False

    async def hold(self, stop_event: asyncio.Event) -> bool:
        """Renew every retry period while leading: True when stopped by ``stop_event`` while still leading,
        False when leadership is lost — someone else holds the lease, or no renewal succeeded within the
        renew deadline since the last one. The caller must stop acting at once on False.
        """
        if not self.is_leader:
            raise RuntimeError("hold() before acquire() succeeded")
        while True:
            if await _wait(stop_event, self.retry_period_seconds):
                return True
            deadline = self._renewed_mono + self.renew_deadline_seconds
            remaining = deadline - time.monotonic()
            outcome = Outcome.ERROR
            if remaining > 0:
                try:
                    async with asyncio.timeout(remaining):
                        outcome = await self._attempt(renew_only=True)
                except TimeoutError:
                    log.warning("%s: renewing lease %s timed out", self.identity, self.lease_ref)
            if outcome is Outcome.LEADING:
                continue
            if outcome is Outcome.HELD:
                return self._lost(f"lease taken by {self.holder}" if self.holder else "lease deleted or emptied")
            if time.monotonic() >= deadline:
                return self._lost(f"could not renew within {self.renew_deadline_seconds:g}s")

    async def release(self) -> bool:
        """Give the lease up if we hold it (empty holder, duration 1 s); True when it is no longer ours."""
        was_leader, self.is_leader = self.is_leader, False
        for _ in range(3):
            try:
                lease = await self._call(self.api.read_namespaced_lease, self.name, self.namespace)
                current = record_from_lease(lease)
                if current.holder_identity != self.identity:
                    return True
                body = lease_body(
                    self.name,
                    self.namespace,
                    released(current, self._clock()),
                    lease.metadata.resource_version,
                    lease.metadata,
                )
                await self._call(self.api.replace_namespaced_lease, self.name, self.namespace, body)
            except ApiException as exc:
                if exc.status == 404:
                    return True
                if exc.status == 409:
                    continue  # renewed or taken in between: look again
                log.warning("%s: could not release lease %s: %s", self.identity, self.lease_ref, _brief(exc))
                return False
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                log.warning("%s: could not release lease %s: %s", self.identity, self.lease_ref, exc)
                return False
            if was_leader:
                log.info("%s: released lease %s", self.identity, self.lease_ref)
            return True
        return False

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _lost(self, why: str) -> bool:
        self.is_leader = False
        log.error("%s: lost leadership of lease %s: %s", self.identity, self.lease_ref, why)
        return False

    async def _attempt(self, *, renew_only: bool) -> Outcome:
        """One read-decide-write round (client-go's tryAcquireOrRenew)."""
        started = time.monotonic()
        try:
            lease = await self._call(self.api.read_namespaced_lease, self.name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                log.warning("%s: could not read lease %s: %s", self.identity, self.lease_ref, _brief(exc))
                return Outcome.ERROR
            lease = None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            log.warning("%s: could not read lease %s: %s", self.identity, self.lease_ref, exc)
            return Outcome.ERROR
        now, mono = self._clock(), time.monotonic()
        current = None if lease is None else record_from_lease(lease)
        if current != self._observed:
            self._observed, self._observed_mono = current, mono
        if renew_only and (current is None or current.holder_identity != self.identity):
            return Outcome.HELD
        # observed_at on the clock of ``now`` but measured by the monotonic clock: immune to skew and jumps
        observed_at = None if current is None else now - dt.timedelta(seconds=mono - self._observed_mono)
        record = decide(current, self.identity, now, self.lease_duration_seconds, observed_at)
        if record is None:
            return Outcome.HELD
        try:
            if lease is None:
                body = lease_body(self.name, self.namespace, record)
                await self._call(self.api.create_namespaced_lease, self.namespace, body)
            else:
                body = lease_body(self.name, self.namespace, record, lease.metadata.resource_version, lease.metadata)
                await self._call(self.api.replace_namespaced_lease, self.name, self.namespace, body)
        except ApiException as exc:
            if exc.status == 409:  # AlreadyExists on create, Conflict on replace: another candidate won
                log.debug("%s: lost the round for lease %s", self.identity, self.lease_ref)
                return Outcome.CONFLICT
            log.warning("%s: could not write lease %s: %s", self.identity, self.lease_ref, _brief(exc))
            return Outcome.ERROR
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            log.warning("%s: could not write lease %s: %s", self.identity, self.lease_ref, exc)
            return Outcome.ERROR
        self._observed, self._observed_mono, self._renewed_mono = record, time.monotonic(), started
        return Outcome.LEADING

    async def _call(self, method: Callable[..., Any], *args: Any) -> Any:
        call = functools.partial(method, *args, _request_timeout=self._request_timeout)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` or until ``event`` is set; whether it is set. Creates no task (see ``__main__``)."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        pass
    return event.is_set()


def _brief(exc: ApiException) -> str:
    return f"{exc.status} {exc.reason}"
