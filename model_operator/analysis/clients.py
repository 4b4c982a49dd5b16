"""One ``httpx.Client`` per Prometheus address, shared by every tick of every ModelDeployment that queries it.

A client is a connection pool: one per analysis (as before) opened new connections for every analysis and
never closed them. Ticks run in worker threads; an ``httpx.Client`` may be shared between threads, and the
lock here only guards the dict. ``close`` — kopf's cleanup handler, the demo's exit — closes them all.
The timeouts and retries come from the operator's settings.
"""

from __future__ import annotations

import threading
from types import TracebackType

import httpx

from model_operator.analysis.base import ProviderUnavailable
from model_operator.analysis.prometheus import PrometheusProvider
from model_operator.deadline import Deadline


class PrometheusClients:
    def __init__(self, timeout: float, retries: int, transport: httpx.BaseTransport | None = None) -> None:
        """``timeout``: what one query may take, retries included (``prometheus_timeout_seconds``);
        ``transport``: for tests (``httpx.MockTransport``)."""
        self.timeout = timeout
        self.retries = retries
        self._transport = transport
        self._clients: dict[str, httpx.Client] = {}
        self._lock = threading.Lock()
        self._closed = False

    def client(self, address: str) -> httpx.Client:
        """The client for ``address`` (trailing slashes ignored), made on first use."""
        key = address.rstrip("/")
        with self._lock:
            if self._closed:
                raise ProviderUnavailable(f"Prometheus at {key}: the operator is shutting down")
            client = self._clients.get(key)
            if client is None:
                client = httpx.Client(timeout=httpx.Timeout(self.timeout), transport=self._transport)
                self._clients[key] = client
            return client

    def provider(self, address: str, deadline: Deadline | None = None) -> PrometheusProvider:
        """A provider for one tick: the shared client, the settings' timeout and retries, the tick's deadline."""
        client = self.client(address)
        return PrometheusProvider(address, client, retries=self.retries, timeout=self.timeout, deadline=deadline)

    def addresses(self) -> list[str]:
        with self._lock:
            return sorted(self._clients)

    def close(self) -> None:
        """Close every client; idempotent. Providers made before fail their next query as unavailable."""
        with self._lock:
            self._closed = True
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    def __enter__(self) -> PrometheusClients:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
