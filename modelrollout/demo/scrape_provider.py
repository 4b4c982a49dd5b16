"""A ``MetricProvider`` that needs no Prometheus: it scrapes the model servers itself.

Used by the demo when no ``prometheus`` binary is installed. Every ``interval`` seconds a thread
scrapes each target's ``/metrics`` (the prometheus_client text format, parsed with
``prometheus_client.parser``) and appends one sample per series to a short ring buffer (``retention``
seconds), labelled with ``instance`` as Prometheus would. ``query`` evaluates the analysis' PromQL
over that buffer with ``promql`` — the same shapes, the same semantics; other queries raise
``ProviderError``. The operator never uses this: it is the local runtime's peer of Prometheus.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

from model_operator.analysis.base import ProviderError
from modelrollout.demo import promql
from modelrollout.demo.promql import Labels, Matcher, Points, Vector

SCRAPE_TIMEOUT = 0.8


@dataclass
class _Series:
    points: deque[tuple[float, float]] = field(default_factory=deque)
    stale_at: float | None = None
    """When it disappeared from its target's scrape (or the target went away), as Prometheus' staleness
    marker: an instant selector no longer sees it; range functions still use its earlier samples."""


class SampleBuffer:
    """Recent samples per series, oldest first; thread-safe. A ``promql.SampleSource``."""

    def __init__(self, retention: float) -> None:
        self.retention = retention
        self._lock = threading.Lock()
        self._series: dict[str, dict[Labels, _Series]] = {}

    def add(self, at: float, name: str, labels: Mapping[str, str], value: float) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._series.setdefault(name, {}).setdefault(key, _Series())
            points = series.points
            if points and points[-1][0] >= at:
                return  # samples only move forward in time
            points.append((at, value))
            series.stale_at = None
            while points and points[0][0] < at - self.retention:
                points.popleft()

    def mark_stale(self, at: float, keys: Iterable[tuple[str, Labels]]) -> None:
        """These series ended at ``at`` (Prometheus writes a staleness marker)."""
        with self._lock:
            for name, labels in keys:
                series = self._series.get(name, {}).get(labels)
                if series is not None and series.stale_at is None:
                    series.stale_at = at

    def _matching(self, name: str, matchers: Sequence[Matcher]) -> list[tuple[Labels, _Series]]:
        out = []
        for labels, series in self._series.get(name, {}).items():
            as_dict = dict(labels)
            if all(m.matches(as_dict) for m in matchers):
                out.append((labels, series))
        return out

    def select(self, name: str, matchers: Sequence[Matcher], start: float, end: float) -> list[tuple[Labels, Points]]:
        if end - start > self.retention:
            raise ProviderError(
                f"a {end - start:g}s range is longer than the {self.retention:g}s of samples the in-process "
                "provider keeps; use a real Prometheus for long windows"
            )
        out: list[tuple[Labels, Points]] = []
        with self._lock:
            for labels, series in self._matching(name, matchers):
                selected = [(t, v) for t, v in series.points if start <= t <= end]
                if selected:
                    out.append((labels, selected))
        return out

    def latest(self, name: str, matchers: Sequence[Matcher], at: float, lookback: float) -> Vector:
        """The lookback is cut to the retention: older samples are gone."""
        out: Vector = []
        with self._lock:
            for labels, series in self._matching(name, matchers):
                found = [(t, v) for t, v in series.points if at - lookback <= t <= at]
                if not found:
                    continue
                t, value = found[-1]
                if series.stale_at is not None and t <= series.stale_at <= at:
                    continue
                out.append((labels, value))
        return out


class ScrapeProvider:
    """Scrapes ``targets`` every ``interval`` seconds; answers the analysis' queries in process."""

    name = "scrape"

    def __init__(
        self,
        interval: float = 1.0,
        retention: float = 120.0,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.interval = interval
        self.buffer = SampleBuffer(retention)
        self._client = client or httpx.Client(timeout=SCRAPE_TIMEOUT)
        self._clock = clock
        self._targets: tuple[str, ...] = ()
        self._seen: dict[str, set[tuple[str, Labels]]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scrape", daemon=True)
        self.scrapes = 0

    def set_targets(self, urls: Iterable[str]) -> None:
        """Base URLs to scrape from now on (``/metrics`` is appended). Idempotent; the series of a target
        that is gone go stale, as in Prometheus."""
        wanted = tuple(sorted(set(urls)))
        for gone in set(self._targets) - set(wanted):
            self.buffer.mark_stale(self._clock(), self._seen.pop(urlsplit(gone).netloc, set()))
        self._targets = wanted

    def start(self) -> ScrapeProvider:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self._client.close()

    def scrape_once(self) -> None:
        """Scrape every target once; a target that does not answer is skipped (Prometheus: up=0)."""
        for url in self._targets:
            at = self._clock()
            try:
                response = self._client.get(f"{url}/metrics")
                response.raise_for_status()
            except httpx.HTTPError:
                continue
            instance = urlsplit(url).netloc
            try:
                samples = [s for family in text_string_to_metric_families(response.text) for s in family.samples]
            except ValueError:
                continue  # not the exposition format: a failed scrape
            seen: set[tuple[str, Labels]] = set()
            for sample in samples:
                labels = {**sample.labels, "instance": instance}
                self.buffer.add(at, sample.name, labels, float(sample.value))
                seen.add((sample.name, tuple(sorted(labels.items()))))
            self.buffer.mark_stale(at, self._seen.get(instance, set()) - seen)
            self._seen[instance] = seen
        self.scrapes += 1

    def query(self, promql_text: str) -> float | None:
        return promql.instant_value(promql_text, self.buffer, self._clock())

    def query_vector(self, promql_text: str) -> dict[str, float]:
        """``{label value: number}`` for a query aggregated by exactly one label (``VectorProvider``);
        NaN left out, ``{}`` for no data — as ``PrometheusProvider.query_vector``."""
        out: dict[str, float] = {}
        for labels, value in promql.evaluate(promql_text, self.buffer, self._clock()):
            if len(labels) != 1:
                raise ProviderError(
                    f"aggregate the query by exactly one label, got series {dict(labels)}: {promql_text}"
                )
            if not math.isnan(value):
                out[labels[0][1]] = value
        return out

    def is_online(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.scrape_once()
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))
