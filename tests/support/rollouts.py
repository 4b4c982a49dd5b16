"""Pieces of the operator integration tests: the operator process, a weighted load generator that acts
as the gateway (it reads the HTTPRoute's weights and mirror filter from the API server, interpreting them by
the Gateway API spec with ``tests.support.routes``, not with the operator's code), and polling helpers."""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx
from kubernetes import client as k8s

from model_server.bundle import ModelManifest
from tests.support.routes import UnreadableRoute, httproute_split
from tests.support.servers import REPO, free_port

T = TypeVar("T")
SERVER_IMAGE = "modelrollout/server@sha256:" + "0" * 64  # kwok pods: no container ever runs

ROW = {"sepal_length_cm": 5.1, "sepal_width_cm": 3.5, "petal_length_cm": 1.4, "petal_width_cm": 0.2}


def model_ref(manifest: ModelManifest, bundle: Path) -> dict[str, str]:
    """``spec.model`` for a bundle directory that ``modelrollout train`` wrote."""
    return {"name": manifest.name, "version": manifest.version, "uri": f"file://{bundle}", "digest": manifest.digest}


def model_deployment(
    name: str,
    namespace: str,
    model: Mapping[str, str],
    prometheus: str,
    steps: Sequence[Mapping[str, Any]],
    analysis: Mapping[str, Any],
    strategy: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A ModelDeployment of two replicas whose canary walks ``steps``, analysed by ``prometheus``;
    ``strategy`` adds to ``spec.strategy`` (``{"type": "BlueGreen", "blueGreen": {...}}``)."""
    return {
        "apiVersion": "modelrollout.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": dict(model),
            "image": SERVER_IMAGE,
            "replicas": 2,
            "strategy": {"canary": {"steps": list(steps)}, **(strategy or {})},
            "analysis": {**analysis, "prometheus": {"address": prometheus}},
        },
    }


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.25) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


LEASE_NAMESPACE = "modelrollout-system"
# Short lease timings so failover takes seconds in tests (the shipped defaults are client-go's 15/10/2 s).
LEASE_TIMINGS = {  # short, so the leader-election tests measure failover in seconds (pass them as ``env``)
    "MODELROLLOUT_LEASE_DURATION_SECONDS": "4",
    "MODELROLLOUT_RENEW_DEADLINE_SECONDS": "3",
    "MODELROLLOUT_RETRY_PERIOD_SECONDS": "0.5",
}
# Everyone else runs the chart's defaults: on a loaded 2-core machine a 3 s renew deadline can lapse, and a
# leader that cannot renew exits (as it must) in the middle of a rollout test.
CHART_LEASE_TIMINGS = {
    "MODELROLLOUT_LEASE_DURATION_SECONDS": "15",
    "MODELROLLOUT_RENEW_DEADLINE_SECONDS": "10",
    "MODELROLLOUT_RETRY_PERIOD_SECONDS": "2",
}


@dataclass
class OperatorProcess:
    """``python -m model_operator`` (kopf behind Lease leader election), authenticated by ``kubeconfig``
    (a ServiceAccount token). Its identity is ``{identity}_{random}``; ``env`` adds or overrides variables,
    e.g. ``MODELROLLOUT_LEASE_NAME`` to give a test a Lease of its own."""

    kubeconfig: Path
    log_path: Path
    metrics_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    identity: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    liveness_port: int = field(default_factory=free_port)

    def start(self, wait_leading: bool = True) -> OperatorProcess:
        """Spawn it; wait until it leads, or else until it is up and following (its liveness endpoint answers)."""
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PYTHONUNBUFFERED": "1",
            "MODELROLLOUT_METRICS_PORT": str(self.metrics_port),
            "MODELROLLOUT_MAX_TICK_SECONDS": "0.5",
            "MODELROLLOUT_IDLE_TICK_SECONDS": "1",
            "MODELROLLOUT_PROMETHEUS_RETRIES": "0",
            "MODELROLLOUT_LEASE_NAMESPACE": LEASE_NAMESPACE,
            "MODELROLLOUT_LIVENESS_PORT": str(self.liveness_port),
            **CHART_LEASE_TIMINGS,
            **({"POD_NAME": self.identity} if self.identity else {}),
            **self.env,
        }
        command = [sys.executable, "-m", "model_operator"]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        if wait_leading:
            self.wait_leading(60)
        else:
            wait_for(self._liveness_up, 60, "operator liveness endpoint")
        return self

    def wait_leading(self, timeout: float) -> None:
        wait_for(self._leads, timeout, "the operator to lead (modelrollout_leader 1)")

    def leading(self) -> bool:
        """Its metrics say it holds the Lease and runs the handlers (followers serve ``modelrollout_leader 0``)."""
        try:
            return "modelrollout_leader 1.0" in self.metrics()
        except httpx.HTTPError:
            return False

    def _leads(self) -> bool:
        self._check_running()
        return self.leading()

    def serves_metrics(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def _liveness_up(self) -> bool:
        self._check_running()
        try:
            return httpx.get(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def _check_running(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"operator exited with {self.process.returncode}:\n{self.log()[-3000:]}")

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, no state flushed — a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        """SIGTERM: kopf stops, the Lease is released; SIGKILL if that takes over 20 s."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _track(service: str) -> str:
    """The track a ModelDeployment's Service serves: ``<md>-stable`` -> ``stable``."""
    return service.rsplit("-", 1)[-1]


class WeightedLoad:
    """Sends ``rate`` requests/s to the stable or candidate server, split by the HTTPRoute's weights, and
    copies the share its RequestMirror filter names to the mirror's backend, discarding the copy's answer.

    This is the gateway's job in a real cluster; here it is the only thing not done by a real
    component. ``direct`` adds requests/s sent straight to one track's Service, as a smoke test or QA
    client hits a blue-green preview (counted in ``sent_direct``, never in ``sent``). Bounded: it stops
    after ``max_seconds`` even if nobody calls ``stop``.
    """

    def __init__(
        self,
        api: k8s.ApiClient,
        namespace: str,
        route: str,
        backends: dict[str, str],
        rate: float = 40.0,
        max_seconds: float = 240.0,
        senders: int = 4,
        rows: Sequence[Mapping[str, float]] = (ROW,),
        direct: Mapping[str, float] | None = None,
    ) -> None:
        self._custom = k8s.CustomObjectsApi(api)
        self.namespace, self.route, self.backends = namespace, route, backends
        self.rate, self.max_seconds = rate, max_seconds
        self.sent: Counter[tuple[str, int]] = Counter()
        """Live requests by (track, status): what users got."""
        self.mirrored: Counter[tuple[str, int]] = Counter()
        """Mirrored copies by (track, status): answered, then discarded."""
        self.sent_direct: Counter[tuple[str, int]] = Counter()
        self.weights: list[tuple[float, int]] = []
        self.mirrors: list[tuple[float, float]] = []
        """(time, percent mirrored) as the route said, next to ``weights``."""
        self._mirror: tuple[str, float] | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.errors: list[str] = []
        self.route_errors: list[str] = []
        """Why the route could not be read by the Gateway API spec (``canary_weight`` then raises)."""
        self._weights: dict[str, float] | None = None  # track -> percent of live requests; None: no route yet
        self._senders = senders
        self.rows = list(rows)  # each request posts one, picked at random (prediction-mix tests need variety)
        self._threads = [threading.Thread(target=self._watch, daemon=True)]
        self._threads += [threading.Thread(target=self._send, args=(i,), daemon=True) for i in range(senders)]
        self._threads += [
            threading.Thread(target=self._send_direct, args=(track, per_second), daemon=True)
            for track, per_second in (direct or {}).items()
        ]

    def start(self) -> WeightedLoad:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            if thread.ident is not None:  # started
                thread.join(10)

    def canary_weight(self) -> int | None:
        """The candidate's (canary or preview) share of live requests, percent; None before the route exists
        or while it forwards nothing."""
        if self.route_errors:
            raise AssertionError(f"the stand-in gateway cannot read the route: {self.route_errors[-1]}")
        return self._candidate_share()

    def _candidate_share(self) -> int | None:
        weights = self._weights or {}
        total = sum(weights.values())
        candidate = sum(w for track, w in weights.items() if track != "stable")
        return None if not total else round(100 * candidate / total)

    def _watch(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                route = cast(
                    dict[str, Any],
                    self._custom.get_namespaced_custom_object(
                        "gateway.networking.k8s.io", "v1", self.namespace, "httproutes", self.route
                    ),
                )
                split = httproute_split(route)  # by the spec: weight default 1, mirror percent/fraction/all
                self._weights = {_track(name): share for name, share in split.live.items()}
                copies = [(_track(name), share) for name, share in split.mirrored.items()]
                self._mirror = copies[0] if copies else None
                now = time.monotonic()
                self.weights.append((now, self._candidate_share() or 0))
                self.mirrors.append((now, self._mirror[1] if self._mirror else 0))
            except k8s.ApiException:
                pass
            except UnreadableRoute as exc:  # a route this reading cannot follow: loud, not guessed
                self.route_errors.append(f"route {self.namespace}/{self.route}: {exc}")
            self._stop.wait(0.25)

    def _send(self, seed: int) -> None:
        rng = random.Random(seed)
        deadline = time.monotonic() + self.max_seconds
        with httpx.Client(timeout=5) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                started = time.monotonic()
                weights = {"stable": 100.0} if self._weights is None else dict(self._weights)
                total = sum(weights.values())
                if not total:  # every backend weight 0: the gateway forwards nothing and answers 500
                    with self._lock:
                        self.sent[("none", 500)] += 1
                    self._stop.wait(max(0.0, self._senders / self.rate - (time.monotonic() - started)))
                    continue
                pick = rng.uniform(0, total)
                track = "stable"
                for name, weight in weights.items():
                    pick -= weight
                    if pick <= 0 and weight > 0:
                        track = name
                        break
                row = self.rows[rng.randrange(len(self.rows))] if len(self.rows) > 1 else self.rows[0]
                self._post(client, track, row, self.sent)
                mirror = self._mirror
                if mirror is not None and rng.uniform(0, 100) < mirror[1]:
                    self._post(client, mirror[0], row, self.mirrored)
                self._stop.wait(max(0.0, self._senders / self.rate - (time.monotonic() - started)))

    def _send_direct(self, track: str, per_second: float) -> None:
        deadline = time.monotonic() + self.max_seconds
        with httpx.Client(timeout=5) as client:
            for index in itertools.count():
                if self._stop.is_set() or time.monotonic() >= deadline:
                    return
                started = time.monotonic()
                self._post(client, track, self.rows[index % len(self.rows)], self.sent_direct)
                self._stop.wait(max(0.0, 1 / per_second - (time.monotonic() - started)))

    def _post(
        self, client: httpx.Client, track: str, row: Mapping[str, float], counts: Counter[tuple[str, int]]
    ) -> None:
        url = self.backends.get(track)
        if url is None:
            return
        try:
            status = client.post(f"{url}/predict", json=row).status_code
        except Exception as exc:  # a sender must never die: record and go on
            self.errors.append(repr(exc))
            status = 599
        with self._lock:
            counts[(track, status)] += 1
