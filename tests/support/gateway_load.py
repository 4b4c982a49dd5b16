"""Steady load through the gateway, as users send it, and what each transition cost them.

The load goes to the gateway's address only: no test code picks a backend, so what is measured is what a
client of the gateway sees while the operator moves traffic. Each response's model version (the server
names it in every answer, errors included) tells which track answered; a connection error or a non-2xx
answer is a failed request, except an error the faulty version itself was built to give (tests choose
such versions on purpose; those are the model's failures, not the transition's).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

# One flower of each species per request: a good model spreads its predictions over three classes.
IRIS_ROWS = (
    {"sepal_length_cm": 5.1, "sepal_width_cm": 3.5, "petal_length_cm": 1.4, "petal_width_cm": 0.2},
    {"sepal_length_cm": 6.4, "sepal_width_cm": 3.2, "petal_length_cm": 4.5, "petal_width_cm": 1.5},
    {"sepal_length_cm": 6.3, "sepal_width_cm": 3.3, "petal_length_cm": 6.0, "petal_width_cm": 2.5},
)


@dataclass(frozen=True)
class Sample:
    """One request: when it was sent (monotonic seconds), what came back."""

    at: float
    status: int
    """HTTP status; 0 for a connection error or timeout."""
    version: str | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass(frozen=True)
class Segment:
    """The requests of one transition and what they cost."""

    name: str
    samples: Sequence[Sample]
    faulty_versions: Collection[str] = ()

    @property
    def failed(self) -> list[Sample]:
        """Failed at the gateway: connection errors and non-2xx answers not given by a faulty version."""
        return [s for s in self.samples if not s.ok and s.version not in self.faulty_versions]

    def first(self, version: str) -> Sample | None:
        return next((s for s in self.samples if s.version == version), None)

    def last(self, version: str) -> Sample | None:
        return next((s for s in reversed(self.samples) if s.version == version), None)

    def summary(self) -> dict[str, Any]:
        failures = Counter(f"{s.status} {s.error or ''}".strip() for s in self.failed)
        return {
            "requests": len(self.samples),
            "failed_requests": len(self.failed),
            "failures": dict(failures.most_common(5)),
            "versions": dict(Counter(s.version or "none" for s in self.samples)),
        }


def _version(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    version = body.get("version") if isinstance(body, dict) else None
    return version if isinstance(version, str) else None


@dataclass
class GatewayLoad:
    """``rate`` requests per second in all, from ``workers`` threads, each with its own keep-alive client
    (a gateway's connection reuse is part of what a transition must survive). Bounded: it stops after
    ``max_seconds`` even if nobody calls ``stop``."""

    url: str
    host: str | None = None
    rate: float = 30.0
    workers: int = 3
    max_seconds: float = 900.0
    timeout: float = 5.0
    samples: list[Sample] = field(init=False, default_factory=list)
    _stop: threading.Event = field(init=False, default_factory=threading.Event)
    _threads: list[threading.Thread] = field(init=False, default_factory=list)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def start(self) -> GatewayLoad:
        started = time.monotonic()
        for index in range(self.workers):
            thread = threading.Thread(target=self._run, args=(index, started), daemon=True, name=f"load-{index}")
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 5)

    def mark(self) -> float:
        """A point in time to cut segments at."""
        return time.monotonic()

    def segment(self, name: str, start: float, end: float, faulty_versions: Collection[str] = ()) -> Segment:
        with self._lock:
            chosen = [s for s in self.samples if start <= s.at < end]
        return Segment(name, chosen, faulty_versions)

    def wait_for_requests(self, count: int, timeout: float = 30.0) -> None:
        """Until ``count`` more requests were answered (e.g. to have load on both sides of a moment)."""
        target = len(self.samples) + count
        deadline = time.monotonic() + timeout
        while len(self.samples) < target:
            if time.monotonic() > deadline:
                raise AssertionError(f"the load generator answered {len(self.samples)} of {target} requests")
            time.sleep(0.05)

    def _run(self, index: int, started: float) -> None:
        period = self.workers / self.rate
        headers = {"Host": self.host} if self.host else {}
        body = {"instances": list(IRIS_ROWS)}
        next_at = started + index * period / self.workers
        with httpx.Client(base_url=self.url, headers=headers, timeout=self.timeout) as client:
            while not self._stop.is_set() and time.monotonic() - started < self.max_seconds:
                delay = next_at - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
                next_at = max(next_at + period, time.monotonic() - period)  # no burst after a slow answer
                sent = time.monotonic()
                try:
                    response = client.post("/predict", json=body)
                    sample = Sample(sent, response.status_code, _version(response))
                except httpx.HTTPError as error:
                    sample = Sample(sent, 0, None, f"{type(error).__name__}: {error}"[:200])
                with self._lock:
                    self.samples.append(sample)
