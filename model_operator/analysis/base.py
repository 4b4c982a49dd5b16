"""The metric-provider interface (Flagger's ``RunQuery`` + ``IsOnline``, Argo's one-package-per-provider).

ProviderError            the provider could not answer: unreachable, timeout, bad query, an answer that is
│                        not Prometheus' (HTML, a login page, a 404) — the check records an Error verdict
└── ProviderUnavailable  the provider is down or unreachable (retrying later may help)
ProviderFault            the provider raised anything else (its bug, an answer it could not read): no verdict;
                         the tick fails with the reason in ``.status`` and an Event (``analysis/guard.py``)
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


class ProviderError(Exception):
    """The query could not be answered (not the same as "no data", which is ``None``)."""


class ProviderUnavailable(ProviderError):
    """The provider is unreachable or timed out after retries."""


class ProviderFault(Exception):
    """A provider failed other than by ``ProviderError``. Deliberately not one: the checks must not record
    it as an Error verdict, since nobody knows what it means; the tick fails and is retried instead."""


class MetricProvider(Protocol):
    name: str

    def query(self, promql: str) -> float | None:
        """One number, or None when the query matched no data. Idempotent; raises ProviderError."""
        ...

    def is_online(self) -> bool:
        """Whether the provider answers at all. Idempotent; never raises."""
        ...


@runtime_checkable
class VectorProvider(MetricProvider, Protocol):
    """A provider that can also answer with several numbers, one per value of a label.

    Optional: the canary-vs-stable comparisons of histograms (``by (le)``) and of predicted classes
    (``by (class)``) need it; a provider without it answers those checks with an Error, never a Pass.
    """

    def query_vector(self, promql: str) -> dict[str, float]:
        """``{label value: number}`` for a query aggregated ``by`` exactly one label; ``{}`` for no data.
        NaN samples are left out. Idempotent; raises ProviderError."""
        ...
