"""The PromQL subset the operator's analysis generates, evaluated over stored samples.

``model_operator.analysis.checks`` builds a handful of query shapes (``requests_query``,
``error_rate_query``, ``latency_query``, and for ``compareToStable`` / ``maxInputDrift`` per-label
increases, ``… or vector(0)`` and ``max(gauge)``); this module parses the small grammar they are
written in and evaluates it exactly as Prometheus 2.x does, so the in-process provider and a real
Prometheus give the same number for the same samples (a test compares them):

    EXPR      := DIVISION ( "or" DIVISION )*                union by label set
    DIVISION  := OPERAND ( "/" OPERAND )*                   one-to-one matching on identical label sets
    OPERAND   := "(" EXPR ")"
               | AGG [BY] "(" EXPR ")" [BY]                 AGG := sum | max | min | avg | count
               | ("rate" | "increase") "(" SELECTOR "[" DURATION "]" ")"
               | "histogram_quantile" "(" NUMBER "," EXPR ")"
               | "vector" "(" NUMBER ")"
               | SELECTOR                                    the latest sample within the lookback
    SELECTOR  := metric_name [ "{" label ("=" | "!=" | "=~" | "!~") "string", … "}" ]
    BY        := "by" "(" label, … ")"

Semantics kept from Prometheus: the range ``[t - w, t]`` is closed (2.x); ``rate``/``increase`` need two
samples, correct counter resets and extrapolate to the range boundaries (``extrapolatedRate``);
``histogram_quantile`` coalesces and monotonises buckets and interpolates linearly
(``bucketQuantile``); an instant selector takes the latest sample of the last 5 minutes unless the
series went stale; ``x / 0`` is ±Inf and ``0 / 0`` NaN. Anything else raises ``ProviderError``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

from model_operator.analysis.base import ProviderError
from model_operator.durations import parse_duration

Labels = tuple[tuple[str, str], ...]
"""A label set without ``__name__``, sorted by name."""
Points = list[tuple[float, float]]
"""(unix seconds, value), oldest first."""
Vector = list[tuple[Labels, float]]
LOOKBACK = 300.0
"""Prometheus' default lookback for instant selectors, seconds."""
AGGREGATIONS = ("sum", "max", "min", "avg", "count")
SUPPORTED = (
    "sum/max/min/avg/count [by (…)] (…), rate(m{…}[w]), increase(m{…}[w]), histogram_quantile(q, …), "
    "vector(n), m{…}, / and or — the shapes model_operator.analysis.checks builds; "
    "run a real Prometheus for anything else"
)


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str
    value: str

    def matches(self, labels: dict[str, str]) -> bool:
        actual = labels.get(self.label, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        found = re.fullmatch(self.value, actual) is not None
        return found if self.op == "=~" else not found


class SampleSource(Protocol):
    def select(self, name: str, matchers: Sequence[Matcher], start: float, end: float) -> list[tuple[Labels, Points]]:
        """Every series named ``name`` matching all ``matchers``, with its samples in ``[start, end]``."""
        ...

    def latest(self, name: str, matchers: Sequence[Matcher], at: float, lookback: float) -> Vector:
        """Per matching series, its last sample in ``[at - lookback, at]`` unless the series went stale
        after it."""
        ...


@dataclass(frozen=True)
class RangeFunction:
    function: str  # "rate" | "increase"
    name: str
    matchers: tuple[Matcher, ...]
    window: float


@dataclass(frozen=True)
class Selector:
    name: str
    matchers: tuple[Matcher, ...]


@dataclass(frozen=True)
class Aggregate:
    op: str
    inner: Node
    by: tuple[str, ...] | None


@dataclass(frozen=True)
class Quantile:
    q: float
    inner: Node


@dataclass(frozen=True)
class Literal:
    """``vector(n)``: one sample without labels."""

    value: float


@dataclass(frozen=True)
class Divide:
    left: Node
    right: Node


@dataclass(frozen=True)
class Or:
    left: Node
    right: Node


Node = RangeFunction | Selector | Aggregate | Quantile | Literal | Divide | Or


class _Parser:
    _IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
    _NUMBER = re.compile(r"[-+]?(?:[0-9]*\.)?[0-9]+(?:[eE][-+]?[0-9]+)?")
    _OPS = ("=~", "!~", "!=", "=")

    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def fail(self, what: str) -> ProviderError:
        return ProviderError(f"unsupported query ({what} at offset {self.pos}): {self.text}; supported: {SUPPORTED}")

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def take(self, token: str) -> bool:
        self.skip()
        if self.text.startswith(token, self.pos):
            self.pos += len(token)
            return True
        return False

    def expect(self, token: str) -> None:
        if not self.take(token):
            raise self.fail(f"expected {token!r}")

    def pattern(self, regex: re.Pattern[str], what: str) -> str:
        self.skip()
        found = regex.match(self.text, self.pos)
        if found is None:
            raise self.fail(f"expected {what}")
        self.pos = found.end()
        return found.group()

    def string(self) -> str:
        self.skip()
        quote = self.text[self.pos : self.pos + 1]
        if quote not in ('"', "'"):
            raise self.fail("expected a quoted string")
        out, self.pos = [], self.pos + 1
        while self.pos < len(self.text) and self.text[self.pos] != quote:
            if self.text[self.pos] == "\\" and self.pos + 1 < len(self.text):
                self.pos += 1
            out.append(self.text[self.pos])
            self.pos += 1
        self.expect(quote)
        return "".join(out)

    def parse(self) -> Node:
        node = self.expr()
        self.skip()
        if self.pos != len(self.text):
            raise self.fail("unexpected text")
        return node

    def expr(self) -> Node:
        node = self.division()
        while self.keyword("or"):
            node = Or(node, self.division())
        return node

    def division(self) -> Node:
        node = self.operand()
        while self.take("/"):
            node = Divide(node, self.operand())
        return node

    def keyword(self, word: str) -> bool:
        """``word`` as a whole word (``or`` must not match the start of ``order``)."""
        self.skip()
        found = self._IDENT.match(self.text, self.pos)
        if found is None or found.group() != word:
            return False
        self.pos = found.end()
        return True

    def operand(self) -> Node:
        if self.take("("):
            node = self.expr()
            self.expect(")")
            return node
        name = self.pattern(self._IDENT, "a function or metric name")
        if name in AGGREGATIONS:
            by = self.by()
            self.expect("(")
            inner = self.expr()
            self.expect(")")
            return Aggregate(name, inner, by if by is not None else self.by())
        if name == "vector":
            self.expect("(")
            value = float(self.pattern(self._NUMBER, "a number"))
            self.expect(")")
            return Literal(value)
        if name in ("rate", "increase"):
            self.expect("(")
            metric = self.pattern(self._IDENT, "a metric name")
            matchers = self.matchers()
            self.expect("[")
            end = self.text.find("]", self.pos)
            try:
                window = parse_duration(self.text[self.pos : end].strip()) if end >= 0 else 0.0
            except ValueError as exc:
                raise self.fail(str(exc)) from exc
            self.pos = end if end >= 0 else self.pos
            self.expect("]")
            self.expect(")")
            return RangeFunction(name, metric, matchers, window)
        if name == "histogram_quantile":
            self.expect("(")
            q = float(self.pattern(self._NUMBER, "a number"))
            self.expect(",")
            inner = self.expr()
            self.expect(")")
            return Quantile(q, inner)
        self.skip()
        if self.text.startswith("(", self.pos):
            raise self.fail(f"{name!r} is not supported")
        matchers = self.matchers()
        self.skip()
        if self.text.startswith("[", self.pos):
            raise self.fail("a range selector outside rate() or increase()")
        return Selector(name, matchers)

    def by(self) -> tuple[str, ...] | None:
        if not self.keyword("by"):
            return None
        self.expect("(")
        labels: list[str] = []
        while not self.take(")"):
            labels.append(self.pattern(self._IDENT, "a label name"))
            self.take(",")
        return tuple(labels)

    def matchers(self) -> tuple[Matcher, ...]:
        if not self.take("{"):
            return ()
        out: list[Matcher] = []
        while not self.take("}"):
            label = self.pattern(self._IDENT, "a label name")
            op = next((op for op in self._OPS if self.take(op)), None)
            if op is None:
                raise self.fail("expected a label matcher operator")
            value = self.string()
            if op in ("=~", "!~"):
                try:
                    re.compile(value)
                except re.error as exc:
                    raise self.fail(f"bad regular expression {value!r}: {exc}") from exc
            out.append(Matcher(label, op, value))
            self.take(",")
        return tuple(out)


@lru_cache(maxsize=256)
def parse(query: str) -> Node:
    """The query's syntax tree; ``ProviderError`` when it is outside the supported subset."""
    return _Parser(query).parse()


def evaluate(query: str, source: SampleSource, at: float) -> Vector:
    """Instant query at unix time ``at``."""
    return _eval(parse(query), source, at)


def instant_value(query: str, source: SampleSource, at: float) -> float | None:
    """One number, as ``MetricProvider.query`` returns it: None for no data or NaN."""
    result = evaluate(query, source, at)
    if not result:
        return None
    if len(result) > 1:
        raise ProviderError(f"query returned {len(result)} series; aggregate it to one number: {query}")
    value = result[0][1]
    return None if math.isnan(value) else value


def _eval(node: Node, source: SampleSource, at: float) -> Vector:
    if isinstance(node, RangeFunction):
        out: Vector = []
        for labels, points in source.select(node.name, node.matchers, at - node.window, at):
            value = extrapolated_rate(points, at - node.window, at, node.window, node.function == "rate")
            if value is not None:
                out.append((labels, value))
        return out
    if isinstance(node, Selector):
        return source.latest(node.name, node.matchers, at, LOOKBACK)
    if isinstance(node, Literal):
        return [((), node.value)]
    if isinstance(node, Aggregate):
        return _aggregate(node, _eval(node.inner, source, at))
    if isinstance(node, Quantile):
        buckets: dict[Labels, list[tuple[float, float]]] = {}
        for labels, value in _eval(node.inner, source, at):
            le = dict(labels).get("le")
            if le is not None:
                buckets.setdefault(tuple((k, v) for k, v in labels if k != "le"), []).append((float(le), value))
        return [(labels, bucket_quantile(node.q, found)) for labels, found in buckets.items()]
    left = _eval(node.left, source, at)
    right = _eval(node.right, source, at)
    if isinstance(node, Or):
        have = {labels for labels, _ in left}
        return left + [(labels, value) for labels, value in right if labels not in have]
    by_labels: dict[Labels, float] = {}
    for labels, value in right:
        if labels in by_labels:
            raise ProviderError("many-to-many matching in a division is not supported")
        by_labels[labels] = value
    return [(labels, _divide(value, by_labels[labels])) for labels, value in left if labels in by_labels]


def _max(values: list[float]) -> float:
    return max(values, key=lambda v: -math.inf if math.isnan(v) else v)  # NaN only when all are NaN


def _min(values: list[float]) -> float:
    return min(values, key=lambda v: math.inf if math.isnan(v) else v)


def _avg(values: list[float]) -> float:
    return math.fsum(values) / len(values)


def _count(values: list[float]) -> float:
    return float(len(values))


_COMBINE: dict[str, Callable[[list[float]], float]] = {
    "sum": math.fsum, "max": _max, "min": _min, "avg": _avg, "count": _count,
}  # fmt: skip


def _aggregate(node: Aggregate, vector: Vector) -> Vector:
    groups: dict[Labels, list[float]] = {}
    for labels, value in vector:
        key = () if node.by is None else tuple((k, v) for k, v in labels if k in node.by)
        groups.setdefault(key, []).append(value)
    combine = _COMBINE[node.op]
    return [(key, combine(values)) for key, values in groups.items()]


def _divide(a: float, b: float) -> float:
    if b == 0:
        return math.nan if a == 0 or math.isnan(a) else math.copysign(math.inf, a)
    return a / b


def extrapolated_rate(points: Points, start: float, end: float, window: float, is_rate: bool) -> float | None:
    """Prometheus' ``extrapolatedRate`` for a counter: ``rate`` (per second) or ``increase``."""
    if len(points) < 2:
        return None
    (first_t, first_v), (last_t, last_v) = points[0], points[-1]
    sampled = last_t - first_t
    if sampled <= 0:
        return None
    result = last_v - first_v
    previous = first_v
    for _, value in points[1:]:
        if value < previous:  # a counter reset: the process restarted
            result += previous
        previous = value
    to_start, to_end = first_t - start, end - last_t
    average = sampled / (len(points) - 1)
    if result > 0 and first_v >= 0:
        to_start = min(to_start, sampled * (first_v / result))  # never extrapolate below zero
    threshold = average * 1.1
    interval = sampled
    interval += to_start if to_start < threshold else average / 2
    interval += to_end if to_end < threshold else average / 2
    result *= interval / sampled
    return result / window if is_rate else result


def bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' ``bucketQuantile`` over (upper bound, cumulative count) pairs."""
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    merged: dict[float, float] = {}
    for upper, count in buckets:
        merged[upper] = merged.get(upper, 0.0) + count
    ordered = sorted(merged.items())
    if not ordered or ordered[-1][0] != math.inf:
        return math.nan
    highest = -math.inf
    for i, (upper, count) in enumerate(ordered):
        highest = max(highest, count)
        ordered[i] = (upper, highest)
    if len(ordered) < 2:
        return math.nan
    observations = ordered[-1][1]
    if observations == 0:
        return math.nan
    rank = q * observations
    b = next((i for i in range(len(ordered) - 1) if ordered[i][1] >= rank), len(ordered) - 1)
    if b == len(ordered) - 1:
        return ordered[-2][0]
    if b == 0 and ordered[0][0] <= 0:
        return ordered[0][0]
    start, (end, count) = 0.0, ordered[b]
    if b > 0:
        start = ordered[b - 1][0]
        count -= ordered[b - 1][1]
        rank -= ordered[b - 1][1]
    return start + (end - start) * (rank / count)
