"""Prometheus instant queries over HTTP, with timeouts and retries with exponential backoff.

No data (an empty vector, or NaN from a 0/0 rate) is ``None``; a transport failure or a bad query is a
``ProviderError`` — the analysis treats the two differently (inconclusive vs error), and neither ever
counts as a pass.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import httpx

from model_operator.analysis.base import ProviderError, ProviderUnavailable

DEFAULT_TIMEOUT = httpx.Timeout(5.0, connect=2.0)


class PrometheusProvider:
    name = "prometheus"

    def __init__(
        self,
        address: str,
        client: httpx.Client | None = None,
        retries: int = 2,
        backoff: float = 0.25,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.address = address.rstrip("/")
        self._client = client or httpx.Client(timeout=DEFAULT_TIMEOUT)
        self._retries = retries
        self._backoff = backoff
        self._sleep = sleep

    def query(self, promql: str) -> float | None:
        payload = self._get("/api/v1/query", {"query": promql})
        data: dict[str, Any] = payload.get("data") or {}
        result: list[Any] = data.get("result") or []
        if data.get("resultType") == "scalar":
            return _number(result[1])
        if data.get("resultType") != "vector":
            raise ProviderError(f"query must return a vector or scalar, got {data.get('resultType')!r}: {promql}")
        if not result:
            return None
        if len(result) > 1:
            raise ProviderError(f"query returned {len(result)} series; aggregate it to one number: {promql}")
        return _number(result[0]["value"][1])

    def query_vector(self, promql: str) -> dict[str, float]:
        payload = self._get("/api/v1/query", {"query": promql})
        data: dict[str, Any] = payload.get("data") or {}
        if data.get("resultType") != "vector":
            raise ProviderError(f"query must return a vector, got {data.get('resultType')!r}: {promql}")
        out: dict[str, float] = {}
        for series in data.get("result") or []:
            labels: dict[str, str] = series.get("metric") or {}
            if len(labels) != 1:
                raise ProviderError(f"aggregate the query by exactly one label, got series {labels}: {promql}")
            (key,) = labels.values()
            value = _number(series["value"][1])
            if value is not None:
                out[key] = value
        return out

    def is_online(self) -> bool:
        try:
            return self._client.get(f"{self.address}/-/ready").status_code == 200
        except httpx.HTTPError:
            return False

    def _get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        last: Exception | None = None
        for attempt in range(self._retries + 1):
            if attempt:
                self._sleep(self._backoff * 2 ** (attempt - 1))
            try:
                response = self._client.get(f"{self.address}{path}", params=params)
            except httpx.HTTPError as exc:
                last = exc
                continue
            if response.status_code == 400 or response.status_code == 422:
                raise ProviderError(f"Prometheus rejected the query: {_error(response)}")
            if response.status_code >= 500:
                last = ProviderError(f"Prometheus answered HTTP {response.status_code}: {_error(response)}")
                continue
            body: dict[str, Any] = response.json()
            if body.get("status") != "success":
                raise ProviderError(f"Prometheus query failed: {body.get('error')}")
            return body
        raise ProviderUnavailable(f"Prometheus at {self.address} unreachable after {self._retries + 1} tries: {last}")


def _number(text: object) -> float | None:
    value = float(str(text))
    return None if math.isnan(value) else value


def _error(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.text))
    except ValueError:
        return response.text[:200]
