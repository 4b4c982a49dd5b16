"""The Prometheus provider's failures, each a ``ProviderError`` that says what came back and from where; its
time budget (the settings' timeout, retries included, never past the tick's deadline); and the one shared
client per address that the operator closes on shutdown."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from model_operator.analysis.base import ProviderError, ProviderUnavailable
from model_operator.analysis.clients import PrometheusClients
from model_operator.analysis.prometheus import PrometheusProvider
from model_operator.deadline import Deadline, DeadlineExceeded

ADDRESS = "http://prom:9090"
VECTOR = {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, "0.5"]}]}}
LOGIN_PAGE = "<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Sign in to continue</body></html>"


class Clock:
    """A monotonic clock that moves only when told (by a sleep, or a request that takes time)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def provider(
    handler: Callable[[httpx.Request], httpx.Response],
    retries: int = 2,
    clock: Clock | None = None,
    timeout: float = 5.0,
    deadline: Deadline | None = None,
) -> PrometheusProvider:
    clock = clock or Clock()
    client = httpx.Client(transport=httpx.MockTransport(handler))
    return PrometheusProvider(
        ADDRESS, client, retries=retries, sleep=clock.sleep, timeout=timeout, deadline=deadline, clock=clock
    )


def html(code: int, body: str = LOGIN_PAGE) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(code, text=body, headers={"content-type": "text/html; charset=utf-8"})


@pytest.mark.parametrize(
    ("code", "says"),
    [
        (200, "which is not JSON: the address is probably not a Prometheus API root"),
        (401, r"refused the query \(authentication failed\)"),
        (403, r"refused the query \(authorisation failed\)"),
        (404, "the address is probably not a Prometheus API root"),
        (400, "HTTP 400"),
    ],
)
def test_an_html_answer_is_a_provider_error_that_says_what_came_back(code: int, says: str) -> None:
    """Before, any non-5xx answer went to ``response.json()``: HTML raised JSONDecodeError, which is no
    ProviderError, escaped the tick and killed the daemon with nothing in the status."""
    with pytest.raises(ProviderError, match=says) as raised:
        provider(html(code)).query("up")
    message = str(raised.value)
    assert f"HTTP {code}" in message and "text/html" in message, "status code and content type"
    assert "<!DOCTYPE html> <html><head><title>Sign in" in message, "the first bytes of the body, on one line"
    assert f"{ADDRESS}/api/v1/query" in message, "the address asked"
    assert len(message) < 600, "short enough for a status message"


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        ({"hello": "world"}, "query failed"),
        ({"status": "success"}, "without a data object"),
        ({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}}]}}, "malformed result"),
        ({"status": "success", "data": {"resultType": "vector", "result": [{"value": [0, "x"]}]}}, "malformed"),
        ({"status": "success", "data": {"resultType": "scalar", "result": []}}, "malformed result"),
        ({"status": "error", "errorType": "execution", "error": "too many samples"}, "execution: too many samples"),
    ],
)
def test_json_that_is_not_a_prometheus_answer_is_a_provider_error(answer: object, says: str) -> None:
    with pytest.raises(ProviderError, match=says):
        provider(lambda request: httpx.Response(200, json=answer)).query("up")


def test_a_json_array_or_a_redirect_is_a_provider_error() -> None:
    with pytest.raises(ProviderError, match="not JSON"):
        provider(lambda request: httpx.Response(200, json=[1, 2])).query("up")
    moved = httpx.Response(302, text="", headers={"location": "https://login.example/"})
    with pytest.raises(ProviderError, match=r"HTTP 302 .*redirected to https://login.example/"):
        provider(lambda request: moved).query("up")


def test_a_malformed_vector_of_series_is_a_provider_error() -> None:
    answer = {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {"le": "1"}}]}}
    with pytest.raises(ProviderError, match="malformed result"):
        provider(lambda request: httpx.Response(200, json=answer)).query_vector("up")


def test_a_rejected_query_says_prometheus_rejected_it() -> None:
    answer = {"status": "error", "errorType": "bad_data", "error": "parse error at char 3"}
    with pytest.raises(ProviderError, match="rejected the query: bad_data: parse error at char 3"):
        provider(lambda request: httpx.Response(400, json=answer)).query("x(")


def test_5xx_html_is_retried_then_unavailable_with_what_came_back() -> None:
    calls: list[int] = []

    def bad_gateway(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return html(502, "<html>Bad Gateway</html>")(request)

    with pytest.raises(ProviderUnavailable, match=r"after 3 tries .*HTTP 502 \(text/html.*Bad Gateway"):
        provider(bad_gateway).query("up")
    assert len(calls) == 3


def test_each_try_gets_the_timeout_from_the_settings() -> None:
    """``prometheus_timeout_seconds`` reaches the request (before, it was never read)."""
    seen: list[dict[str, float]] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return httpx.Response(200, json=VECTOR)

    clients = PrometheusClients(timeout=3.5, retries=0, transport=httpx.MockTransport(record))
    assert clients.provider(ADDRESS).query("up") == 0.5
    assert seen == [pytest.approx({"connect": 2.0, "read": 3.5, "write": 3.5, "pool": 3.5}, abs=0.1)]


def test_the_timeout_is_the_whole_query_retries_included() -> None:
    """A Prometheus that never answers costs one query at most the settings' timeout, however many retries."""
    clock = Clock()
    timeouts: list[float] = []

    def hangs(request: httpx.Request) -> httpx.Response:
        read = request.extensions["timeout"]["read"]
        timeouts.append(read)
        clock.now += read
        raise httpx.ReadTimeout("no answer", request=request)

    started = clock.now
    with pytest.raises(ProviderUnavailable, match=r"after 1 tries in 5s .*no answer within 5s \(ReadTimeout\)"):
        provider(hangs, retries=2, clock=clock).query("up")
    assert timeouts == [5.0] and clock.now - started == 5.0

    def slow(request: httpx.Request) -> httpx.Response:
        clock.now += min(2.0, request.extensions["timeout"]["read"])
        raise httpx.ReadTimeout("slow", request=request)

    started = clock.now
    with pytest.raises(ProviderUnavailable, match="after 3 tries in 5s"):
        provider(slow, retries=5, clock=clock).query("up")
    assert clock.now - started == pytest.approx(5.0), "2 s, 0.25 s pause, 2 s, 0.5 s pause, the 0.25 s left"


def test_a_query_never_outlasts_the_ticks_deadline() -> None:
    clock = Clock()
    deadline = Deadline(10.0, clock.now - 8.5, clock)  # 1.5 s left of the tick
    timeouts: list[float] = []

    def hangs(request: httpx.Request) -> httpx.Response:
        timeouts.append(request.extensions["timeout"]["read"])
        clock.now += request.extensions["timeout"]["read"]
        raise httpx.ReadTimeout("no answer", request=request)

    with pytest.raises(DeadlineExceeded, match="10s deadline waiting for Prometheus at http://prom:9090"):
        provider(hangs, clock=clock, deadline=deadline).query("up")
    assert timeouts == [1.5], "the request's timeout is what is left of the tick, not the settings' 5 s"
    assert not issubclass(DeadlineExceeded, ProviderError), "the checks must not record it as an Error verdict"


def test_one_client_per_address_shared_and_closed() -> None:
    clients = PrometheusClients(timeout=5.0, retries=0, transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    first = clients.client(ADDRESS)
    assert clients.client(ADDRESS + "/") is first, "the same address, however written, shares one client"
    assert clients.provider(ADDRESS)._client is first and clients.provider(ADDRESS)._client is first
    other = clients.client("http://other:9090")
    assert other is not first and clients.addresses() == ["http://other:9090", ADDRESS]
    before_close = clients.provider(ADDRESS)

    clients.close()
    assert first.is_closed and other.is_closed
    with pytest.raises(ProviderUnavailable, match="shutting down"):
        clients.provider(ADDRESS)
    with pytest.raises(ProviderUnavailable, match="closed"):
        before_close.query("up")
    clients.close()  # idempotent


def test_is_online_never_raises() -> None:
    assert provider(lambda request: httpx.Response(200)).is_online()
    assert not provider(html(404)).is_online()

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    assert not provider(down).is_online()
