"""Bounded HTTP load on loopback, routed by the local gateway: the demo's "users".

``senders`` threads share ``rate`` requests per second (each paced on its own clock, never bursting
to catch up) and stop after ``max_seconds`` even if nobody calls ``stop``. Every request is recorded
— when it was sent, which track and version answered, its status and latency — so the live view and
the timeline show what clients saw, next to what the operator's analysis saw.
Status 599 is a transport error; 503 means the route chose a backend with no ready process.

A request the route mirrors (a shadow rollout's RequestMirror filter) is also sent, at the same time and
from a separate pool as a gateway does, to the mirror backend; that answer is discarded — kept apart in
``mirrored()``, never in what clients saw — and a slow or failing mirror never delays the client.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from model_operator.kube.manifests import TRACK_LABEL
from modelrollout.demo.local_kube import Endpoint
from modelrollout.demo.router import LocalRouter

# A few real iris rows (one or two per class), so predictions are not all the same class.
ROWS = (
    {"sepal_length_cm": 5.1, "sepal_width_cm": 3.5, "petal_length_cm": 1.4, "petal_width_cm": 0.2},
    {"sepal_length_cm": 4.9, "sepal_width_cm": 3.0, "petal_length_cm": 1.4, "petal_width_cm": 0.2},
    {"sepal_length_cm": 7.0, "sepal_width_cm": 3.2, "petal_length_cm": 4.7, "petal_width_cm": 1.4},
    {"sepal_length_cm": 5.7, "sepal_width_cm": 2.8, "petal_length_cm": 4.1, "petal_width_cm": 1.3},
    {"sepal_length_cm": 6.3, "sepal_width_cm": 3.3, "petal_length_cm": 6.0, "petal_width_cm": 2.5},
    {"sepal_length_cm": 6.5, "sepal_width_cm": 3.0, "petal_length_cm": 5.2, "petal_width_cm": 2.0},
)
NO_ENDPOINTS = 503
TRANSPORT_ERROR = 599
REQUEST_TIMEOUT = 5.0


@dataclass(frozen=True)
class Outcome:
    """One request: ``sent`` is on the generator's clock (``time.monotonic`` by default)."""

    sent: float
    track: str
    version: str
    status: int
    latency: float
    reached: bool = True
    """False when no process was there to send it to (status 503 without a request)."""

    @property
    def failed(self) -> bool:
        return self.status >= 500


@dataclass(frozen=True)
class TrackStats:
    """What clients of one track saw over a recent window."""

    requests_per_second: float
    error_rate: float | None
    p95_seconds: float | None


def quantile(values: list[float], q: float) -> float | None:
    """Nearest-rank quantile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class LoadGenerator:
    def __init__(
        self,
        router: LocalRouter,
        rate: float,
        max_seconds: float,
        senders: int = 6,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.router, self.rate, self.max_seconds, self.senders = router, rate, max_seconds, senders
        self._clock = clock
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._outcomes: list[Outcome] = []
        self._mirrored: list[Outcome] = []
        self._mirror_pool = ThreadPoolExecutor(max_workers=senders, thread_name_prefix="mirror")
        self._mirror_client: httpx.Client | None = None
        self._threads = [
            threading.Thread(target=self._send, args=(i,), name=f"load-{i}", daemon=True) for i in range(senders)
        ]

    def start(self) -> LoadGenerator:
        self._mirror_client = httpx.Client(timeout=REQUEST_TIMEOUT)
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stop sending; waits for in-flight requests (at most their timeout). Idempotent."""
        self._stop.set()
        for thread in self._threads:
            if thread.ident is not None:
                thread.join(REQUEST_TIMEOUT + 1)
        self._mirror_pool.shutdown(wait=True, cancel_futures=True)
        if self._mirror_client is not None:
            self._mirror_client.close()

    def outcomes(self) -> list[Outcome]:
        with self._lock:
            return list(self._outcomes)

    def mirrored(self) -> list[Outcome]:
        """The mirrored copies, in the order their answers came back; no client saw these."""
        with self._lock:
            return list(self._mirrored)

    def first_sent(self, track: str, version: str, after: float = 0.0) -> float | None:
        """When the first request to ``track`` served by ``version`` was sent (at or after ``after``)."""
        return next(
            (o.sent for o in self.outcomes() if o.sent >= after and o.track == track and o.version == version), None
        )

    def stats(self, window: float) -> dict[str, TrackStats]:
        """Per track, over the last ``window`` seconds."""
        now = self._clock()
        with self._lock:
            start = bisect.bisect_left(self._outcomes, now - window, key=lambda o: o.sent)
            recent = self._outcomes[start:]
        out: dict[str, TrackStats] = {}
        for track in sorted({o.track for o in recent}):
            mine = [o for o in recent if o.track == track]
            out[track] = TrackStats(
                requests_per_second=len(mine) / window,
                error_rate=sum(o.failed for o in mine) / len(mine),
                p95_seconds=quantile([o.latency for o in mine if o.reached and o.status != TRANSPORT_ERROR], 0.95),
            )
        return out

    def _send(self, seed: int) -> None:
        rng = random.Random(seed)  # noqa: S311 - traffic sampling, not security
        period = self.senders / self.rate
        started = self._clock()
        next_at = started + rng.uniform(0, period)  # spread the senders over one period
        with httpx.Client(timeout=REQUEST_TIMEOUT) as client:
            while not self._stop.wait(max(0.0, next_at - self._clock())):
                if self._clock() - started > self.max_seconds:
                    return
                next_at = max(next_at + period, self._clock())
                pick = self.router.pick(rng)
                if pick is None:
                    continue
                sent = self._clock()
                row = rng.choice(ROWS)
                if pick.mirror is not None and self._mirror_client is not None:
                    with contextlib.suppress(RuntimeError):  # stop() shut the pool down meanwhile
                        self._mirror_pool.submit(self._send_copy, self._mirror_client, pick.mirror, row)
                status = NO_ENDPOINTS
                if pick.url is not None:
                    try:
                        status = client.post(f"{pick.url}/predict", json=row).status_code
                    except httpx.HTTPError:
                        status = TRANSPORT_ERROR
                outcome = Outcome(sent, pick.track, pick.version, status, self._clock() - sent, pick.url is not None)
                with self._lock:
                    index = bisect.bisect_right(self._outcomes, sent, key=lambda o: o.sent)
                    self._outcomes.insert(index, outcome)

    def _send_copy(self, client: httpx.Client, endpoint: Endpoint, row: dict[str, float]) -> None:
        """A mirrored request: sent like any other, its answer recorded apart and otherwise dropped."""
        sent = self._clock()
        try:
            status = client.post(f"{endpoint.url}/predict", json=row).status_code
        except httpx.HTTPError:
            status = TRANSPORT_ERROR
        track, version = endpoint.labels.get(TRACK_LABEL, "?"), endpoint.labels.get("version", "?")
        with self._lock:
            self._mirrored.append(Outcome(sent, track, version, status, self._clock() - sent))
