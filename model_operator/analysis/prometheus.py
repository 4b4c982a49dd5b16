"""Prometheus instant queries over HTTP, with a time budget per query and retries with exponential backoff.

No data (an empty vector, or NaN from a 0/0 rate) is ``None``; everything else that is not a number is a
``ProviderError`` whose message says what came back and from where — status code, content type, the first
bytes of the body, the URL — because the usual cause is an address that is not a Prometheus API root (a
proxy's login page, an HTML 404, a redirect), and the message ends up in ``.status`` for the user to read.
The analysis treats no data and errors differently (inconclusive vs error), and neither ever counts as a pass.

A provider is cheap: the ``httpx.Client`` it is given (one per address, ``PrometheusClients``) holds the
connections; each tick makes its own provider with that tick's deadline.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from typing import Any

import httpx

from model_operator.analysis.base import ProviderError, ProviderUnavailable
from model_operator.deadline import Deadline

DEFAULT_TIMEOUT_SECONDS = 5.0
CONNECT_TIMEOUT_SECONDS = 2.0
"""A blackholed address fails each try within this, leaving the query's budget for the retries."""
RETRIED = {429, 500, 502, 503, 504}
SNIPPET_CHARS = 120


class PrometheusProvider:
    name = "prometheus"

    def __init__(
        self,
        address: str,
        client: httpx.Client,
        retries: int = 2,
        backoff: float = 0.25,
        sleep: Callable[[float], None] = time.sleep,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        deadline: Deadline | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``timeout``: what one query may take, its retries included; ``deadline``: the tick's, which a query
        never outlasts (it raises ``DeadlineExceeded`` instead)."""
        self.address = address.rstrip("/")
        self._client = client
        self._retries = retries
        self._backoff = backoff
        self._sleep = sleep
        self._timeout = timeout
        self._deadline = deadline or Deadline.unlimited()
        self._clock = clock

    def query(self, promql: str) -> float | None:
        data = self._get("/api/v1/query", {"query": promql})
        try:
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
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise self._malformed(data, exc) from exc

    def query_vector(self, promql: str) -> dict[str, float]:
        data = self._get("/api/v1/query", {"query": promql})
        if data.get("resultType") != "vector":
            raise ProviderError(f"query must return a vector, got {data.get('resultType')!r}: {promql}")
        out: dict[str, float] = {}
        try:
            for series in data.get("result") or []:
                labels: dict[str, str] = series.get("metric") or {}
                if len(labels) != 1:
                    raise ProviderError(f"aggregate the query by exactly one label, got series {labels}: {promql}")
                (key,) = labels.values()
                value = _number(series["value"][1])
                if value is not None:
                    out[key] = value
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise self._malformed(data, exc) from exc
        return out

    def is_online(self) -> bool:
        try:
            ready = self._client.get(f"{self.address}/-/ready", timeout=_timeout(self._timeout))
        except (httpx.HTTPError, RuntimeError):  # RuntimeError: the client was closed (operator shutdown)
            return False
        return ready.status_code == 200

    def _get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        """The ``data`` of a successful answer. Transport failures and 429/5xx are retried within the query's
        budget; every other failure is a ``ProviderError`` at once, saying what came back."""
        url = f"{self.address}{path}"
        budget = Deadline.start(self._timeout, self._clock)
        last, tries = "no try fitted in the time left", 0
        for attempt in range(self._retries + 1):
            left = min(budget.remaining(), self._deadline.remaining())
            pause = self._backoff * 2 ** (attempt - 1) if attempt else 0.0
            if left <= pause:
                break
            if pause:
                self._sleep(pause)
                left -= pause
            tries += 1
            try:
                response = self._client.get(url, params=params, timeout=_timeout(left))
            except httpx.TimeoutException as exc:
                last = f"no answer within {left:.3g}s ({type(exc).__name__})"
                continue
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            except RuntimeError as exc:  # the client was closed: the operator is shutting down
                raise ProviderUnavailable(f"Prometheus at {url}: {exc}") from exc
            if response.status_code in RETRIED:
                last = describe(response)
                continue
            return _data(url, response)
        if self._deadline.remaining() < budget.remaining():  # the tick's deadline, not this query's, cut it short
            raise self._deadline.exceeded(f"waiting for Prometheus at {url} ({last})")
        raise ProviderUnavailable(
            f"Prometheus at {url} unreachable after {tries} tries in {self._timeout:g}s "
            f"(prometheus_timeout_seconds): {last}"
        )

    def _malformed(self, data: dict[str, Any], exc: Exception) -> ProviderError:
        shown = _squeeze(repr(data))[:SNIPPET_CHARS]
        return ProviderError(f"Prometheus at {self.address} answered a malformed result ({exc!r}): {shown}")


def _timeout(seconds: float) -> httpx.Timeout:
    return httpx.Timeout(seconds, connect=min(seconds, CONNECT_TIMEOUT_SECONDS))


def _data(url: str, response: httpx.Response) -> dict[str, Any]:
    """``data`` of an answer that is not retried, or the ``ProviderError`` that says why there is none."""
    code = response.status_code
    if code in (401, 403):
        what = "authentication" if code == 401 else "authorisation"
        raise ProviderError(
            f"Prometheus at {url} refused the query ({what} failed): {describe(response)}; the operator sends no "
            "credentials, so point spec.analysis.prometheus.address at an endpoint that needs none"
        )
    if code == 404:
        raise ProviderError(
            f"{url} is not found: {describe(response)}; the address is probably not a Prometheus API root "
            "(it must be the URL that /api/v1/query is under, e.g. http://prometheus-operated.monitoring.svc:9090)"
        )
    body = _json(url, response)
    if code in (400, 422) and body is not None and body.get("status") == "error":
        raise ProviderError(f"Prometheus rejected the query: {body.get('errorType', 'error')}: {body.get('error')}")
    if code != 200:
        moved = f" (redirected to {response.headers['location']})" if "location" in response.headers else ""
        raise ProviderError(f"Prometheus at {url} answered {describe(response)}{moved}")
    if body is None:
        raise ProviderError(
            f"Prometheus at {url} answered {describe(response)}, which is not JSON: the address is probably not a "
            "Prometheus API root (a proxy, a login page or a UI in between?)"
        )
    if body.get("status") != "success":
        raise ProviderError(f"Prometheus query failed: {body.get('errorType', 'error')}: {body.get('error')}")
    data = body.get("data")
    if not isinstance(data, dict):
        raise ProviderError(f"Prometheus at {url} answered JSON without a data object: {describe(response)}")
    return data


def _json(url: str, response: httpx.Response) -> dict[str, Any] | None:
    """The body as a JSON object, or None when it is not one."""
    try:
        body = response.json()
    except ValueError:  # json.JSONDecodeError and UnicodeDecodeError are both ValueErrors
        return None
    return body if isinstance(body, dict) else None


def describe(response: httpx.Response) -> str:
    """``HTTP 404 (text/html): '<html>…'``: what came back, short enough for a status message."""
    content_type = response.headers.get("content-type", "no content type")
    return f"HTTP {response.status_code} ({content_type}): {_squeeze(response.text)[:SNIPPET_CHARS]!r}"


def _squeeze(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _number(text: object) -> float | None:
    value = float(str(text))
    return None if math.isnan(value) else value
