"""``LocalKube``: the operator's ``Kube`` Protocol in memory, with real processes behind Deployments.

What it stores and how it behaves, mirroring what the operator relies on from a real API server:

- every object, keyed by (apiVersion, kind, namespace, name); ``apply`` is idempotent (re-applying an
  equal object changes nothing) and bumps ``metadata.generation`` only when the ``spec`` changes, as the
  API server does; labels and annotations set by others (``patch_metadata``) survive a re-apply, as
  they do under server-side apply with another field manager;
- ``patch_status`` / ``patch_metadata`` are JSON merge patches (``None`` removes a field);
- a Deployment with ``replicas > 0`` runs **one** model-server process per template, whatever the
  replica count — a local stand-in for the pods of that track. A new template is a rolling update: the
  new process starts, and once it is ready the old one is terminated. Scaling to 0 terminates it.
  Status (observedGeneration, replicas, updatedReplicas, readyReplicas, availableReplicas) is computed
  from the processes' readiness, so ``manifests.deployment_serving`` works unchanged; one process
  reports ``spec.replicas`` pods. A replicas change is a spec change (a new generation, observed at once:
  this stand-in controller is synchronous), and the capacity annotation the operator writes is kept, so
  ``manifests.deployment_capacity`` reads back the share a candidate's pods are sized for;
- a terminating process keeps serving for ``termination_delay`` seconds before its SIGTERM (like a
  preStop sleep), so the gateway moves traffic away before the process stops listening;
- Services and HTTPRoutes are only stored; ``endpoints`` resolves a Service selector to ready processes.
- Events (``create_event``) are kept in order, in memory (``events``).

A process that exits on its own is not restarted (a real cluster would): it is a failure the demo reports.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

SUPERVISE_EVERY = 0.2
KILL_AFTER = 15.0
ObjectKey = tuple[str, str, str, str]


class NotFoundError(LookupError):
    """The object does not exist (the API server's 404)."""


class Pod(Protocol):
    """What LocalKube needs from a running server process (``pods.ServerPod`` is the real one)."""

    @property
    def url(self) -> str: ...
    def probe_ready(self) -> bool: ...
    def exit_code(self) -> int | None: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...
    def wait(self, timeout: float) -> None: ...
    def last_log_line(self) -> str: ...


class PodFactory(Protocol):
    def __call__(self, name: str, args: Sequence[str], env: Mapping[str, str], labels: Mapping[str, str]) -> Pod: ...


class PodState(StrEnum):
    STARTING = "Starting"
    """Spawned; not ready yet."""
    READY = "Ready"
    """Answers /health/ready; receives traffic."""
    TERMINATING = "Terminating"
    """Replaced or scaled away; serves until its SIGTERM, then drains and exits."""


@dataclass(frozen=True)
class Endpoint:
    """A process that can take requests, with its pod-template labels (track, model, version)."""

    url: str
    labels: Mapping[str, str]


@dataclass
class _PodRecord:
    pod: Pod
    deployment: ObjectKey
    template: str
    labels: dict[str, str]
    state: PodState = PodState.STARTING
    was_ready: bool = False
    terminate_at: float | None = None
    signalled_at: float | None = None


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: dicts merge recursively, ``None`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def template_hash(template: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:12]


def _key(api_version: str, kind: str, namespace: str, name: str) -> ObjectKey:
    return (api_version, kind, namespace, name)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class LocalKube:
    """In-memory API objects plus a supervisor thread for the processes behind Deployments."""

    def __init__(
        self,
        pod_factory: PodFactory,
        termination_delay: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pod_factory = pod_factory
        self._termination_delay = termination_delay
        self._clock = clock
        self._lock = threading.RLock()
        self._objects: dict[ObjectKey, dict[str, Any]] = {}
        self._pods: list[_PodRecord] = []
        self._failures: list[str] = []
        self._subscribers: list[Callable[[], None]] = []
        self._events: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._supervise_forever, name="local-kube", daemon=True)

    # --- the Kube Protocol ------------------------------------------------------------------------

    def apply(self, obj: dict[str, Any]) -> None:
        """Create or update ``obj``; a Deployment's processes follow its spec. Idempotent."""
        meta = obj["metadata"]
        key = _key(obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])
        with self._lock:
            before = self._objects.get(key)
            after = self._merged(before, copy.deepcopy(obj))
            if after == before:
                return
            self._objects[key] = after
            if obj["kind"] == "Deployment" and obj["apiVersion"] == "apps/v1":
                self._reconcile_deployment(key, after)
        self._notify()

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            key = _key(api_version, kind, namespace, name)
            found = self._objects.get(key)
            if found is None:
                return None
            out = copy.deepcopy(found)
            if kind == "Deployment" and api_version == "apps/v1":
                out["status"] = self._deployment_status(key, out)
            return out

    def delete(self, api_version: str, kind: str, namespace: str, name: str, uid: str) -> None:
        """Remove the object while it is still the one with ``uid`` (else it stays: the API server answers
        409); absent: nothing to do. A Deployment's processes are terminated. Idempotent."""
        key = _key(api_version, kind, namespace, name)
        with self._lock:
            found = self._objects.get(key)
            if found is None or found["metadata"].get("uid") != uid:
                return
            del self._objects[key]
            for record in self._pods:
                if record.deployment == key and record.state is not PodState.TERMINATING:
                    self._terminate(record)
        self._notify()

    def patch_status(self, api_version: str, kind: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        self._patch(_key(api_version, kind, namespace, name), "status", status)

    def patch_metadata(self, api_version: str, kind: str, namespace: str, name: str, meta: dict[str, Any]) -> None:
        self._patch(_key(api_version, kind, namespace, name), "metadata", meta)

    def create_event(self, involved: dict[str, Any], reason: str, message: str, warning: bool) -> None:
        meta = involved["metadata"]
        event = {"involvedObject": {"kind": involved.get("kind"), "namespace": meta.get("namespace"),
                                    "name": meta["name"]},
                 "reason": reason, "message": message, "type": "Warning" if warning else "Normal",
                 "lastTimestamp": _now()}  # fmt: skip
        with self._lock:
            self._events.append(event)

    # --- for the local gateway, the metrics discovery and the demo --------------------------------

    def start(self) -> LocalKube:
        """Start supervising processes (readiness, rolling updates, terminations)."""
        self._thread.start()
        return self

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from any thread, outside the lock) after every change of objects or pods."""
        self._subscribers.append(callback)

    def endpoints(self, selector: Mapping[str, str]) -> list[Endpoint]:
        """Processes matching a Service ``selector`` that take traffic (ready, or terminating but not yet
        signalled)."""
        with self._lock:
            return [
                Endpoint(r.pod.url, dict(r.labels))
                for r in self._pods
                if r.was_ready and r.signalled_at is None and _matches(r.labels, selector)
            ]

    def events(self) -> list[dict[str, Any]]:
        """Every Event posted, oldest first."""
        with self._lock:
            return copy.deepcopy(self._events)

    def scrape_targets(self) -> list[Endpoint]:
        """Every process still running, ready or not: what Prometheus should scrape. Starting ones are
        included, as Kubernetes service discovery lists pods from creation, so that Prometheus' target
        discovery (which applies changes every 5 s) is done before the first request arrives."""
        with self._lock:
            return [Endpoint(r.pod.url, dict(r.labels)) for r in self._pods]

    def failures(self) -> list[str]:
        """Processes that exited on their own, one line each."""
        with self._lock:
            return list(self._failures)

    def close(self, timeout: float = KILL_AFTER) -> None:
        """Stop supervising and stop every process (SIGTERM, SIGKILL after ``timeout``). Idempotent."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        with self._lock:
            records, self._pods = self._pods, []
        for record in records:
            record.pod.terminate()
        deadline = time.monotonic() + timeout
        for record in records:
            record.pod.wait(max(0.1, deadline - time.monotonic()))

    def supervise(self) -> None:
        """One supervision pass; the thread calls it every ``SUPERVISE_EVERY`` seconds (tests call it)."""
        with self._lock:
            records = list(self._pods)
        probes = {id(r): r.pod.probe_ready() for r in records if r.state is PodState.STARTING}
        changed = False
        with self._lock:
            for record in records:
                if record not in self._pods:
                    continue
                changed |= self._supervise_one(record, probes.get(id(record), False))
        if changed:
            self._notify()

    # --- internals --------------------------------------------------------------------------------

    def _merged(self, before: dict[str, Any] | None, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        if before is None:
            meta.setdefault("uid", str(uuid.uuid4()))
            meta["generation"] = 1
            meta["creationTimestamp"] = _now()
            return obj
        old_meta = before["metadata"]
        for server_field in ("uid", "creationTimestamp"):
            meta[server_field] = old_meta[server_field]
        for map_field in ("labels", "annotations"):
            if old_meta.get(map_field) or meta.get(map_field):
                meta[map_field] = {**old_meta.get(map_field, {}), **meta.get(map_field, {})}
        meta["generation"] = old_meta["generation"] + (obj.get("spec") != before.get("spec"))
        if "status" in before:
            obj["status"] = before["status"]
        return obj

    def _patch(self, key: ObjectKey, part: str, patch: dict[str, Any]) -> None:
        with self._lock:
            found = self._objects.get(key)
            if found is None:
                raise NotFoundError(f"{key[1]} {key[2]}/{key[3]} not found")
            found[part] = merge_patch(found.get(part) or {}, patch)
        self._notify()

    def _reconcile_deployment(self, key: ObjectKey, obj: dict[str, Any]) -> None:
        spec = obj["spec"]
        template = spec["template"]
        wanted = int(spec.get("replicas", 1))
        digest = template_hash(template)
        live = [r for r in self._pods if r.deployment == key and r.state is not PodState.TERMINATING]
        current = [r for r in live if r.template == digest]
        if wanted == 0:
            for record in live:
                self._terminate(record)
            return
        if not current:
            container = template["spec"]["containers"][0]
            env = {e["name"]: str(e.get("value", "")) for e in container.get("env") or [] if "name" in e}
            labels = dict(template["metadata"].get("labels", {}))
            pod = self._pod_factory(key[3], container.get("args", []), env, labels)
            self._pods.append(_PodRecord(pod, key, digest, labels))
        elif any(r.state is PodState.READY for r in current):
            for record in live:
                if record.template != digest:
                    self._terminate(record)

    def _terminate(self, record: _PodRecord) -> None:
        record.state = PodState.TERMINATING
        record.terminate_at = self._clock() + (self._termination_delay if record.was_ready else 0.0)

    def _supervise_one(self, record: _PodRecord, ready: bool) -> bool:
        """Advance one process's lifecycle; True when anything visible changed."""
        code = record.pod.exit_code()
        if record.state is PodState.TERMINATING:
            now = self._clock()
            if code is not None:
                self._pods.remove(record)
                return True
            if record.signalled_at is None and record.terminate_at is not None and now >= record.terminate_at:
                record.pod.terminate()
                record.signalled_at = now
                return True
            if record.signalled_at is not None and now - record.signalled_at > KILL_AFTER:
                record.pod.kill()
            return False
        if code is not None:
            name = record.deployment[3]
            version = record.labels.get("version", "?")
            self._failures.append(f"{name} ({version}) exited with code {code}: {record.pod.last_log_line()}")
            self._pods.remove(record)
            return True
        if record.state is PodState.STARTING and ready:
            record.state = PodState.READY
            record.was_ready = True
            deployment = self._objects.get(record.deployment)
            if deployment is not None:
                self._reconcile_deployment(record.deployment, deployment)  # finish a rolling update
            return True
        return False

    def _deployment_status(self, key: ObjectKey, obj: dict[str, Any]) -> dict[str, Any]:
        wanted = int(obj["spec"].get("replicas", 1))
        digest = template_hash(obj["spec"]["template"])
        live = [r for r in self._pods if r.deployment == key and r.state is not PodState.TERMINATING]
        current = [r for r in live if r.template == digest]
        old = [r for r in live if r.template != digest]
        updated = wanted if current else 0
        ready = (wanted if any(r.state is PodState.READY for r in current) else 0) + sum(
            r.state is PodState.READY for r in old
        )
        return {
            "observedGeneration": obj["metadata"]["generation"],
            "replicas": updated + len(old),
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": ready,
        }

    def _notify(self) -> None:
        for callback in list(self._subscribers):
            callback()

    def _supervise_forever(self) -> None:
        while not self._stop.wait(SUPERVISE_EVERY):
            self.supervise()


def _matches(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())
