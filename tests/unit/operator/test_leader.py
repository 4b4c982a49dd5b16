"""Leader election: the pure decision as tables, then the elector's rounds against an in-memory Lease store
that keeps the API server's rules (404 on a missing Lease, 409 on a stale resourceVersion)."""

from __future__ import annotations

import asyncio
import datetime as dt
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from model_operator.__main__ import make_identity
from model_operator.leader import LeaseElector, LeaseRecord, decide, lease_body, micro_time, record_from_lease, released
from model_operator.settings import OperatorSettings

T0 = dt.datetime(2025, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
S = dt.timedelta(seconds=1)
US = dt.timedelta(microseconds=1)
ME = "op-a_1234"


def held(holder: str, renewed: dt.datetime | None, duration: int = 15, transitions: int = 3) -> LeaseRecord:
    return LeaseRecord(holder, (renewed or T0) - 60 * S, renewed, duration, transitions)


TAKE = "take"  # a new record: me, acquire = renew = now, my duration, transitions + 1
RENEW = "renew"  # the same record, renew = now, my duration
HELD = None

DECISIONS = [
    # (case, current record, observed_at, expected)
    ("no lease yet: create it", None, None, "create"),
    ("free (released)", held("", T0, duration=1), None, TAKE),
    ("free, even when just written", held("", T0 + 5 * S), None, TAKE),
    ("held by other, renewed 5s ago", held("op-b", T0 - 5 * S), None, HELD),
    ("held by other, renewed exactly one duration ago: not yet expired", held("op-b", T0 - 15 * S), None, HELD),
    ("held by other, one microsecond past expiry", held("op-b", T0 - 15 * S - US), None, TAKE),
    ("held by other, long expired", held("op-b", T0 - 3600 * S), None, TAKE),
    ("the holder's own (longer) duration counts, not mine", held("op-b", T0 - 20 * S, duration=30), None, HELD),
    ("the holder's own (shorter) duration counts, not mine", held("op-b", T0 - 6 * S, duration=5), None, TAKE),
    ("mine: renew", held(ME, T0 - 2 * S), None, RENEW),
    ("mine, even if expired: renew (nobody took it)", held(ME, T0 - 3600 * S), None, RENEW),
    ("held by other, never renewed nor acquired: expired", LeaseRecord("op-b", None, None, 15, 0), None, TAKE),
    ("held by other, no renewTime: acquireTime counts", LeaseRecord("op-b", T0 - S, None, 15, 0), None, HELD),
    ("skew: holder's clock 1h ahead, but unchanged for 16s here", held("op-b", T0 + 3600 * S), T0 - 16 * S, TAKE),
    ("skew: holder's clock 1h behind, but renewed 1s ago here", held("op-b", T0 - 3600 * S), T0 - S, HELD),
    ("observed exactly one duration ago: not yet expired", held("op-b", T0 - 99 * S), T0 - 15 * S, HELD),
]


@pytest.mark.parametrize(("case", "current", "observed_at", "expected"), DECISIONS, ids=[d[0] for d in DECISIONS])
def test_decide(case: str, current: LeaseRecord | None, observed_at: dt.datetime | None, expected: str | None) -> None:
    record = decide(current, ME, T0, 15, observed_at)
    if expected is HELD:
        assert record is None
    elif expected == "create":
        assert record == LeaseRecord(ME, T0, T0, 15, 0)
    elif expected == TAKE:
        assert current is not None
        assert record == LeaseRecord(ME, T0, T0, 15, current.transitions + 1)
    else:
        assert current is not None and record is not None
        assert record == LeaseRecord(ME, current.acquire_time, T0, 15, current.transitions)


def test_renewal_adopts_my_configured_duration() -> None:
    assert decide(held(ME, T0 - S, duration=30), ME, T0, 15) == LeaseRecord(ME, T0 - 61 * S, T0, 15, 3)


@pytest.mark.parametrize("duration", [0, -1])
def test_decide_refuses_a_duration_under_one_second(duration: int) -> None:
    with pytest.raises(ValueError, match="at least 1 s"):
        decide(None, ME, T0, duration)


def test_transitions_count_each_change_of_holder() -> None:
    record = decide(None, "a", T0, 15)
    assert record is not None
    timeline = [("a", T0 + 2 * S), ("a", T0 + 4 * S), ("b", T0 + 30 * S), ("b", T0 + 32 * S), ("a", T0 + 60 * S)]
    for who, now in timeline:
        record = decide(record, who, now, 15)
        assert record is not None, (who, now)
    assert record.transitions == 2 and record.holder_identity == "a" and record.acquire_time == T0 + 60 * S
    record = decide(released(record, T0 + 61 * S), "b", T0 + 61 * S, 15)
    assert record is not None and record.transitions == 3


def test_released_frees_the_lease_and_keeps_the_count() -> None:
    assert released(held(ME, T0 - S, transitions=7), T0) == LeaseRecord("", T0, T0, 1, 7)
    assert released(held(ME, T0), T0).free


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (T0, "2025-03-01T12:00:00.000000Z"),  # isoformat would drop the zero micros: MicroTime needs six
        (T0 + 123456 * US, "2025-03-01T12:00:00.123456Z"),
        (dt.datetime(2025, 3, 1, 14, 0, tzinfo=dt.timezone(2 * dt.timedelta(hours=1))), "2025-03-01T12:00:00.000000Z"),
        (dt.datetime(2025, 3, 1, 12, 0), "2025-03-01T12:00:00.000000Z"),  # naive is UTC
    ],
)
def test_micro_time(value: dt.datetime, text: str) -> None:
    assert micro_time(value) == text


def test_lease_body_round_trips_and_keeps_labels() -> None:
    record = LeaseRecord(ME, T0, T0 + 1500 * US, 15, 2)
    metadata = SimpleNamespace(labels={"app": "x"}, annotations=None, resource_version="41")
    body = lease_body("lease", "ns", record, "41", metadata)
    assert body["metadata"] == {"name": "lease", "namespace": "ns", "resourceVersion": "41", "labels": {"app": "x"}}
    assert body["spec"]["renewTime"] == "2025-03-01T12:00:00.001500Z"
    assert record_from_lease(FakeLeaseApi.to_lease(body)) == record


def test_record_of_an_empty_lease_is_free() -> None:
    assert record_from_lease(SimpleNamespace(spec=None)).free
    empty = SimpleNamespace(spec=SimpleNamespace(holder_identity=None, acquire_time=None, renew_time=None,
                                                 lease_duration_seconds=None, lease_transitions=None))  # fmt: skip
    assert record_from_lease(empty) == LeaseRecord("", None, None, 1, 0)


# --- settings ------------------------------------------------------------------------------------------


def test_settings_defaults_match_client_go(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    settings = OperatorSettings()
    assert (settings.lease_duration_seconds, settings.renew_deadline_seconds, settings.retry_period_seconds) == (
        15,
        10.0,
        2.0,
    )
    assert settings.leader_election and settings.lease_namespace == "modelrollout-system"
    assert settings.lease_name == "modelrollout-operator" and settings.liveness_port == 8080


def test_settings_lease_namespace_follows_the_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "ops")
    assert OperatorSettings().lease_namespace == "ops"
    monkeypatch.setenv("MODELROLLOUT_LEASE_NAMESPACE", "elsewhere")
    assert OperatorSettings().lease_namespace == "elsewhere"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MODELROLLOUT_RENEW_DEADLINE_SECONDS": "15"}, r"renew_deadline_seconds \(15.0\) must be less than lease"),
        ({"MODELROLLOUT_RETRY_PERIOD_SECONDS": "10"}, r"retry_period_seconds \(10.0\) must be less than renew"),
        ({"MODELROLLOUT_LEASE_DURATION_SECONDS": "4", "MODELROLLOUT_RENEW_DEADLINE_SECONDS": "5"}, "must be less"),
        ({"MODELROLLOUT_LEASE_DURATION_SECONDS": "0"}, "greater than or equal to 1"),
    ],
)
def test_settings_refuse_timings_that_break_the_election(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError, match=message):
        OperatorSettings()


# --- the elector against an in-memory Lease store ------------------------------------------------------


class FakeLeaseApi:
    """The subset of ``CoordinationV1Api`` the elector uses, with the API server's concurrency rules."""

    def __init__(self) -> None:
        self.body: dict[str, Any] | None = None
        self.version = 0
        self.calls: list[tuple[str, Any]] = []
        self.down = False

    @staticmethod
    def to_lease(body: dict[str, Any]) -> SimpleNamespace:
        spec = body["spec"]

        def parse(text: str | None) -> dt.datetime | None:
            return None if text is None else dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)

        meta = body["metadata"]
        metadata = SimpleNamespace(
            resource_version=meta.get("resourceVersion"), labels=meta.get("labels"), annotations=meta.get("annotations")
        )
        lease_spec = SimpleNamespace(
            holder_identity=spec.get("holderIdentity"),
            acquire_time=parse(spec.get("acquireTime")),
            renew_time=parse(spec.get("renewTime")),
            lease_duration_seconds=spec.get("leaseDurationSeconds"),
            lease_transitions=spec.get("leaseTransitions"),
        )
        return SimpleNamespace(metadata=metadata, spec=lease_spec)

    def _check(self, name: str, call: str, timeout: Any) -> None:
        assert timeout == (5, 10), "every call carries a request timeout"
        self.calls.append((call, name))
        if self.down:
            raise ApiException(status=503, reason="Service Unavailable")

    def read_namespaced_lease(self, name: str, namespace: str, _request_timeout: Any = None) -> SimpleNamespace:
        self._check(name, "read", _request_timeout)
        if self.body is None:
            raise ApiException(status=404, reason="Not Found")
        return self.to_lease(self.body)

    def create_namespaced_lease(self, namespace: str, body: dict[str, Any], _request_timeout: Any = None) -> None:
        self._check(body["metadata"]["name"], "create", _request_timeout)
        if self.body is not None:
            raise ApiException(status=409, reason="AlreadyExists")
        self._store(body)

    def replace_namespaced_lease(
        self, name: str, namespace: str, body: dict[str, Any], _request_timeout: Any = None
    ) -> None:
        self._check(name, "replace", _request_timeout)
        assert self.body is not None
        if body["metadata"].get("resourceVersion") != self.body["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        self._store(body)

    def _store(self, body: dict[str, Any]) -> None:
        self.version += 1
        self.body = {**body, "metadata": {**body["metadata"], "resourceVersion": str(self.version)}}

    @property
    def holder(self) -> str:
        assert self.body is not None
        holder: str = self.body["spec"]["holderIdentity"]
        return holder


LEASE_SECONDS = 3
RENEW_DEADLINE_SECONDS = 2.0
RETRY_SECONDS = 0.1
"""Seconds, not fractions: a loaded 2-core machine can stall an event loop for a good part of a second, and
these tests must only fail when the elector is wrong."""


def elector(api: FakeLeaseApi, identity: str) -> LeaseElector:
    return LeaseElector(
        api, "lease", "ns", identity, lease_duration_seconds=LEASE_SECONDS,
        renew_deadline_seconds=RENEW_DEADLINE_SECONDS, retry_period_seconds=RETRY_SECONDS,
    )  # fmt: skip


def test_one_of_two_candidates_wins_and_release_hands_over() -> None:
    api = FakeLeaseApi()
    a, b = elector(api, "a"), elector(api, "b")

    async def scenario() -> None:
        stop = asyncio.Event()
        assert await a.acquire(stop)
        following = asyncio.create_task(b.acquire(stop))
        holding = asyncio.create_task(a.hold(stop))
        written = api.version
        await asyncio.sleep(LEASE_SECONDS + 1)  # longer than the lease: only renewals keep it
        assert not following.done() and api.holder == "a" and b.holder == "a"
        assert api.version > written, "the holder renewed the lease"
        stop.set()
        assert await holding is True and await following is False
        assert await a.release() and api.holder == "" and api.body is not None
        assert api.body["spec"]["leaseDurationSeconds"] == 1  # a released lease expires at once
        assert await b.acquire(asyncio.Event())
        assert api.holder == "b" and api.body["spec"]["leaseTransitions"] == 1

    asyncio.run(scenario())
    a.close()
    b.close()


def test_hold_gives_up_when_the_lease_is_taken() -> None:
    api = FakeLeaseApi()
    a = elector(api, "a")

    async def scenario() -> bool:
        assert await a.acquire(asyncio.Event())
        holding = asyncio.create_task(a.hold(asyncio.Event()))
        await asyncio.sleep(0.2)
        assert api.body is not None
        api.body["spec"]["holderIdentity"] = "intruder"
        return await asyncio.wait_for(holding, 30)  # gives up at its next renewal; the bound is only a backstop

    assert asyncio.run(scenario()) is False and not a.is_leader
    a.close()


def test_hold_gives_up_after_the_renew_deadline() -> None:
    api = FakeLeaseApi()
    a = elector(api, "a")

    async def scenario() -> tuple[bool, float]:
        loop = asyncio.get_running_loop()
        started = loop.time()  # before the last successful write: the deadline runs from that write's start
        assert await a.acquire(asyncio.Event())
        api.down = True
        held_on = await asyncio.wait_for(a.hold(asyncio.Event()), 30)  # a backstop, not the property
        return held_on, loop.time() - started

    held_on, seconds = asyncio.run(scenario())
    # never before the deadline (the property: a slow API server must not make a leader quit early), and
    # before the lease could have passed to another replica (with a generous margin for a loaded machine)
    assert held_on is False and RENEW_DEADLINE_SECONDS <= seconds < LEASE_SECONDS + 5, seconds
    a.close()


def test_identity_is_the_pod_name_and_a_random_suffix() -> None:
    first, second = make_identity({"POD_NAME": "op-7d9f"}), make_identity({"POD_NAME": "op-7d9f"})
    assert first.startswith("op-7d9f_") and second.startswith("op-7d9f_") and first != second
    assert make_identity({}).rsplit("_", 1)[0]  # the hostname when there is no POD_NAME
