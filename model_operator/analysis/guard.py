"""What the reconciler hands the analysis instead of the provider itself.

Before every query the tick's deadline is checked (``DeadlineExceeded`` passes through untouched), and an
exception from the provider that is not a ``ProviderError`` becomes a ``ProviderFault``. A ``ProviderError``
is the provider saying it could not answer: the check records an Error verdict, as before. Anything else — a
provider's bug, an answer it failed to read — used to escape the tick and kill the daemon with nothing in
``.status``; now the tick fails with the reason in ``.status`` and an Event, and is retried.
"""

from __future__ import annotations

from model_operator.analysis.base import MetricProvider, ProviderError, ProviderFault, VectorProvider
from model_operator.deadline import Deadline, DeadlineExceeded


class Guarded:
    """``inner`` behind the tick's deadline and the fault boundary. A ``VectorProvider`` whatever ``inner``
    is; without ``query_vector`` it answers those queries with the ``ProviderError`` the checks expect."""

    def __init__(self, inner: MetricProvider, deadline: Deadline) -> None:
        self.inner = inner
        self.name = inner.name
        self._deadline = deadline

    def query(self, promql: str) -> float | None:
        self._deadline.check(f"before a query to the {self.name} provider")
        try:
            return self.inner.query(promql)
        except (ProviderError, DeadlineExceeded):
            raise
        except Exception as exc:
            raise self._fault(exc) from exc

    def query_vector(self, promql: str) -> dict[str, float]:
        if not isinstance(self.inner, VectorProvider):
            raise ProviderError(f"the {self.name} metric provider cannot answer with one number per label")
        self._deadline.check(f"before a query to the {self.name} provider")
        try:
            return self.inner.query_vector(promql)
        except (ProviderError, DeadlineExceeded):
            raise
        except Exception as exc:
            raise self._fault(exc) from exc

    def is_online(self) -> bool:
        try:
            return self.inner.is_online()
        except Exception:
            return False

    def _fault(self, exc: Exception) -> ProviderFault:
        return ProviderFault(f"the {self.name} metric provider failed: {type(exc).__name__}: {exc}")
