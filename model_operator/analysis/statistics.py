"""Canary-vs-stable statistics: counts in, verdicts out. Pure and deterministic, standard library only.

A bare threshold ("canary error rate <= 1 %") passes a canary that answered 20 requests without an error
and fails one that erred twice in 150 requests while stable errs just as often. Here the canary is judged
against the stable track over the same window, and the amount of evidence limits how sure a verdict may be:

- ``Fail``         only when the data make it likely (posterior >= ``confidence``) that the canary is worse
                   than stable by more than the tolerated margin, and the observations themselves say so
                   (see ``compare_error_rates``; for the class mix, a significant chi-square test);
- ``Pass``         only when the data make it as likely that it is not;
- ``Inconclusive`` otherwise: thin evidence holds the canary at its step, it never promotes it.

Error rates are compared with a beta-binomial model (Beta(1, 1) priors, so each posterior is
Beta(errors + 1, successes + 1)); ``P(p_canary > p_stable + margin)`` is computed by Gauss-Legendre
quadrature of one posterior's density times the other's distribution function, which is the regularized
incomplete beta function evaluated by its continued fraction (Numerical Recipes, 3rd ed., §6.4); accurate
to about 1e-6, far inside any confidence a user would set. Latency reuses the same model on the share of
canary requests slower than a multiple of stable's p95 (from histogram buckets); the class mix is judged
by PSI. No sampling: the same counts always give the same verdict, as the state machine requires. The
operator image installs neither numpy nor scipy, so this module uses ``math`` only.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from model_operator.spec import Verdict

PSI_EPSILON = 1e-4
"""Floor for a class share of zero in PSI (a class one track never predicted)."""
LATENCY_QUANTILE = 0.95
_TINY = 1e-300
_EPS = 1e-13
_SPREAD = 16.0
"""Quadrature covers the narrower posterior's mean ± this many standard deviations (clipped to [0, 1])."""
_PANELS = 4
_NODES = 12


@dataclass(frozen=True)
class Comparison:
    """A verdict with the number shown in status (``value``) and a sentence saying why."""

    verdict: Verdict
    value: float | None
    message: str


# --- beta distributions -------------------------------------------------------------------------------------


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz); converges fast for
    ``x < (a + 1) / (a + b + 2)``, in O(sqrt(max(a, b))) iterations."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, 200 + int(20 * math.sqrt(max(a, b)))):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))  # even step
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))  # odd step
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            return h
    raise ArithmeticError(f"incomplete beta I_{x}({a}, {b}) did not converge")


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def beta_cdf(x: float, a: float, b: float, log_beta: float | None = None) -> float:
    """The regularized incomplete beta function I_x(a, b): P(X <= x) for X ~ Beta(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if a == 1.0:  # closed forms: no errors (or no successes) observed, the most common posteriors
        return -math.expm1(b * math.log1p(-x))
    if b == 1.0:
        return math.exp(a * math.log(x))
    log_b = _log_beta(a, b) if log_beta is None else log_beta
    log_front = a * math.log(x) + b * math.log1p(-x) - log_b
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def beta_sf(x: float, a: float, b: float, log_beta: float | None = None) -> float:
    """P(X > x) for X ~ Beta(a, b), without the cancellation of ``1 - beta_cdf`` in the upper tail."""
    return beta_cdf(1.0 - x, b, a, log_beta)


@dataclass(frozen=True)
class Beta:
    a: float
    b: float

    @classmethod
    def posterior(cls, events: float, trials: float) -> Beta:
        """Posterior of a rate after ``events`` in ``trials`` under a uniform Beta(1, 1) prior."""
        trials = max(trials, 0.0)
        events = min(max(events, 0.0), trials)  # increase() extrapolates: keep 0 <= events <= trials
        return cls(events + 1.0, trials - events + 1.0)

    @property
    def mean(self) -> float:
        return self.a / (self.a + self.b)

    @property
    def sd(self) -> float:
        n = self.a + self.b
        return math.sqrt(self.a * self.b / (n * n * (n + 1.0)))

    @functools.cached_property
    def log_beta(self) -> float:
        return _log_beta(self.a, self.b)

    def log_pdf(self, x: float) -> float:
        return (self.a - 1.0) * math.log(x) + (self.b - 1.0) * math.log1p(-x) - self.log_beta

    def cdf(self, x: float) -> float:
        return beta_cdf(x, self.a, self.b, self.log_beta)

    def sf(self, x: float) -> float:
        return beta_sf(x, self.a, self.b, self.log_beta)


@functools.cache
def _gauss_legendre(n: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Nodes and weights of the n-point Gauss-Legendre rule on [-1, 1] (Newton on P_n)."""
    nodes: list[float] = []
    weights: list[float] = []
    for i in range(1, n + 1):
        x = math.cos(math.pi * (i - 0.25) / (n + 0.5))
        for _ in range(100):
            p_prev, p = 1.0, x
            for k in range(2, n + 1):
                p_prev, p = p, ((2 * k - 1) * x * p - (k - 1) * p_prev) / k
            derivative = n * (x * p - p_prev) / (x * x - 1.0)
            step = p / derivative
            x -= step
            if abs(step) < 1e-15:
                break
        p_prev, p = 1.0, x
        for k in range(2, n + 1):
            p_prev, p = p, ((2 * k - 1) * x * p - (k - 1) * p_prev) / k
        derivative = n * (x * p - p_prev) / (x * x - 1.0)
        nodes.append(x)
        weights.append(2.0 / ((1.0 - x * x) * derivative * derivative))
    return tuple(nodes), tuple(weights)


def _quadrature(lo: float, hi: float) -> Iterable[tuple[float, float]]:
    """(point, weight) pairs of a composite Gauss-Legendre rule on [lo, hi]."""
    if hi <= lo:
        return
    nodes, weights = _gauss_legendre(_NODES)
    width = (hi - lo) / _PANELS
    for panel in range(_PANELS):
        mid = lo + (panel + 0.5) * width
        half = width / 2.0
        for x, w in zip(nodes, weights, strict=True):
            yield mid + half * x, half * w


def probability_greater(x: Beta, y: Beta, margin: float = 0.0) -> float:
    """P(X > Y + margin) for independent X ~ x and Y ~ y, by deterministic quadrature.

    The integral runs over the *narrower* density, so the other distribution function is smooth across
    every panel; the integration range stops where that function is constant (0 or 1), so no panel
    straddles a kink; the result is normalized by the exact mass of the range, so cutting the far tails
    off costs nothing measurable.
    """
    if x.sd >= y.sd:  # P = ∫ f_y(t) · P(X > t + margin) dt
        narrow, lo, hi = y, max(0.0, y.mean - _SPREAD * y.sd), min(1.0, y.mean + _SPREAD * y.sd)
        inner_lo, inner_hi = lo, min(hi, 1.0 - margin)

        def tail(t: float) -> float:
            return x.sf(t + margin)

    else:  # P = ∫ f_x(t) · P(Y < t - margin) dt
        narrow, lo, hi = x, max(0.0, x.mean - _SPREAD * x.sd), min(1.0, x.mean + _SPREAD * x.sd)
        inner_lo, inner_hi = max(lo, margin), hi

        def tail(t: float) -> float:
            return y.cdf(t - margin)

    mass = narrow.cdf(hi) - narrow.cdf(lo)
    if mass <= 0.0:
        return 0.5
    total = math.fsum(w * math.exp(narrow.log_pdf(t)) * tail(t) for t, w in _quadrature(inner_lo, inner_hi))
    return min(1.0, max(0.0, total / mass))


# --- error rates --------------------------------------------------------------------------------------------


def binomial_tail(events: float, trials: float, rate: float) -> float:
    """P(K >= events) for K ~ Binomial(trials, rate): I_rate(events, trials - events + 1), which also
    extends it to the fractional counts ``increase()`` returns."""
    events = min(events, trials)
    if events <= 0:
        return 1.0
    return beta_cdf(rate, events, trials - events + 1.0)


def compare_error_rates(
    canary_errors: float,
    canary_total: float,
    stable_errors: float,
    stable_total: float,
    margin: float,
    confidence: float,
) -> Comparison:
    """Is the canary's error rate more than ``margin`` above stable's? Counts from the same window.

    ``value`` is the posterior probability that it is. A ``Fail`` also needs the data themselves to speak:
    the observed canary rate above stable's plus the margin, and that many canary errors unlikely
    (one-sided binomial tail <= 1 - confidence) at stable's rate. With a uniform prior and a few dozen
    requests, the prior alone makes "worse by more than 0.5 points" likely, and a single error in the
    first 30 requests would otherwise roll back a canary that is as good as stable.
    """
    if canary_total <= 0 or stable_total <= 0:
        who = "canary" if canary_total <= 0 else "stable"
        return Comparison(Verdict.INCONCLUSIVE, None, f"no {who} requests in the window to compare")
    canary, stable = Beta.posterior(canary_errors, canary_total), Beta.posterior(stable_errors, stable_total)
    errors, total = canary.a - 1.0, canary.a + canary.b - 2.0
    worse = probability_greater(canary, stable, margin)
    canary_rate, stable_rate = errors / total, (stable.a - 1.0) / (stable.a + stable.b - 2.0)
    said = (
        f"canary {errors:.0f}/{total:.0f} errors ({canary_rate:.2%}) vs stable "
        f"{stable.a - 1:.0f}/{stable.a + stable.b - 2:.0f} ({stable_rate:.2%}): "
        f"P(canary worse by > {margin:.2%}) = {worse:.3f}"
    )
    if worse >= confidence:
        surprise = binomial_tail(errors, total, stable.mean)
        if canary_rate > stable_rate + margin and surprise <= 1.0 - confidence:
            return Comparison(Verdict.FAIL, worse, f"{said} >= {confidence}")
        return Comparison(
            Verdict.INCONCLUSIVE,
            worse,
            f"{said}, but {errors:.0f} errors in {total:.0f} requests are not unlikely at stable's rate "
            f"(p = {surprise:.2g}): not enough evidence yet",
        )
    if 1.0 - worse >= confidence:
        return Comparison(Verdict.PASS, worse, f"{said} <= {1 - confidence:.3g}")
    return Comparison(Verdict.INCONCLUSIVE, worse, f"{said}: not enough evidence either way yet")


# --- latency from histogram buckets ---------------------------------------------------------------------------


def cumulative_buckets(raw: Mapping[str, float]) -> list[tuple[float, float]]:
    """``{le: cumulative count}`` as Prometheus returns it, sorted by bound, made monotonic (``increase()``
    extrapolates each bucket on its own, so neighbours can disagree slightly — histogram_quantile fixes it
    the same way)."""
    points = sorted((float(le), max(count, 0.0)) for le, count in raw.items())
    fixed: list[tuple[float, float]] = []
    running = 0.0
    for le, count in points:
        running = max(running, count)
        fixed.append((le, running))
    return fixed


def bucket_total(buckets: list[tuple[float, float]]) -> float:
    return buckets[-1][1] if buckets and math.isinf(buckets[-1][0]) else 0.0


def bucket_quantile(buckets: list[tuple[float, float]], quantile: float) -> float | None:
    """The quantile interpolated linearly within its bucket, as PromQL's histogram_quantile does.

    None without observations or without the ``+Inf`` bucket; the highest finite bound when the quantile
    falls in the ``+Inf`` bucket (nothing is known beyond it)."""
    total = bucket_total(buckets)
    if total <= 0:
        return None
    rank = quantile * total
    lower, below = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return lower
            if count == below:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower


def count_above(buckets: list[tuple[float, float]], threshold: float) -> float:
    """How many observations exceed ``threshold``, interpolating linearly within its bucket; everything
    in the ``+Inf`` bucket counts as above (the pessimistic reading)."""
    total = bucket_total(buckets)
    lower, below = 0.0, 0.0
    for le, count in buckets:
        if math.isinf(le):
            break
        if threshold <= le:
            share = 0.0 if le == lower else (threshold - lower) / (le - lower)
            return max(0.0, total - (below + share * (count - below)))
        lower, below = le, count
    return max(0.0, total - below)


def compare_latency(
    canary_buckets: Mapping[str, float],
    stable_buckets: Mapping[str, float],
    ratio: float,
    confidence: float,
    min_count: float,
    quantile: float = LATENCY_QUANTILE,
) -> Comparison:
    """Is the canary's p95 more than ``ratio`` times stable's? Judged from cumulative bucket counts.

    "canary p95 <= ratio · stable p95" is the same statement as "at most 5 % of canary requests are slower
    than ratio · stable p95", and that share is a binomial rate: the count of canary requests above the
    threshold gets the same beta-binomial treatment as errors (stable's p95, from many more requests, is
    taken as known). ``value`` is the interpolated ratio of the two p95s, for people to read.
    """
    canary, stable = cumulative_buckets(canary_buckets), cumulative_buckets(stable_buckets)
    n_canary, n_stable = bucket_total(canary), bucket_total(stable)
    if (thin := _too_few(n_canary, n_stable, min_count, "latency observations")) is not None:
        return thin
    stable_q = bucket_quantile(stable, quantile)
    canary_q = bucket_quantile(canary, quantile)
    assert stable_q is not None  # both totals are positive
    assert canary_q is not None
    threshold = ratio * stable_q
    above = count_above(canary, threshold)
    tail = 1.0 - quantile
    slower = Beta.posterior(above, n_canary).sf(tail)
    shown = canary_q / stable_q if stable_q > 0 else (1.0 if canary_q == 0 else math.inf)
    name = f"p{round(quantile * 100)}"
    said = (
        f"canary {name} {canary_q * 1000:.3g}ms vs stable {stable_q * 1000:.3g}ms ({shown:.2f}x); "
        f"{above / n_canary:.1%} of {n_canary:.0f} canary requests above {ratio:g}x stable's "
        f"({threshold * 1000:.3g}ms): P(more than {tail:.0%}) = {slower:.3f}"
    )
    if slower >= confidence and above / n_canary > tail:
        return Comparison(Verdict.FAIL, shown, f"{said} >= {confidence}")
    if 1.0 - slower >= confidence:
        return Comparison(Verdict.PASS, shown, said)
    return Comparison(Verdict.INCONCLUSIVE, shown, f"{said}: not enough evidence either way yet")


# --- prediction distribution drift --------------------------------------------------------------------------


def shares(counts: Mapping[str, float], classes: Iterable[str]) -> dict[str, float]:
    total = sum(max(counts.get(c, 0.0), 0.0) for c in classes)
    return {c: (max(counts.get(c, 0.0), 0.0) / total if total > 0 else 0.0) for c in classes}


def psi(actual: Mapping[str, float], expected: Mapping[str, float], epsilon: float = PSI_EPSILON) -> float:
    """Population stability index of the class counts ``actual`` against ``expected``:
    sum over classes of (a - e) · ln(a / e) on shares, each share floored at ``epsilon``."""
    classes = sorted(set(actual) | set(expected))
    a, e = shares(actual, classes), shares(expected, classes)
    return math.fsum(
        (max(a[c], epsilon) - max(e[c], epsilon)) * math.log(max(a[c], epsilon) / max(e[c], epsilon)) for c in classes
    )


def _gamma_q(a: float, x: float) -> float:
    """The regularized upper incomplete gamma function Q(a, x) (Numerical Recipes gser / gcf)."""
    if x <= 0.0:
        return 1.0
    log_front = -x + a * math.log(x) - math.lgamma(a)
    limit = 200 + int(20 * math.sqrt(a))
    if x < a + 1.0:  # series for P(a, x)
        term = total = 1.0 / a
        ap = a
        for _ in range(limit):
            ap += 1.0
            term *= x / ap
            total += term
            if abs(term) < abs(total) * _EPS:
                return max(0.0, 1.0 - total * math.exp(log_front))
        raise ArithmeticError(f"incomplete gamma P({a}, {x}) did not converge")
    b = x + 1.0 - a  # continued fraction for Q(a, x), modified Lentz
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, limit):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = b + an / c
        c = c if abs(c) > _TINY else _TINY
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            return math.exp(log_front) * h
    raise ArithmeticError(f"incomplete gamma Q({a}, {x}) did not converge")


def chi_square_homogeneity(canary: Mapping[str, float], stable: Mapping[str, float]) -> tuple[float, float]:
    """Pearson's chi-square test that both tracks predict classes in the same proportions: (statistic,
    p-value). Classes neither track predicted do not count."""
    classes = [c for c in sorted(set(canary) | set(stable)) if canary.get(c, 0.0) + stable.get(c, 0.0) > 0]
    n_canary = sum(max(canary.get(c, 0.0), 0.0) for c in classes)
    n_stable = sum(max(stable.get(c, 0.0), 0.0) for c in classes)
    n = n_canary + n_stable
    if len(classes) < 2 or n_canary <= 0 or n_stable <= 0:
        return 0.0, 1.0
    statistic = 0.0
    for c in classes:
        column = max(canary.get(c, 0.0), 0.0) + max(stable.get(c, 0.0), 0.0)
        for observed, row in ((max(canary.get(c, 0.0), 0.0), n_canary), (max(stable.get(c, 0.0), 0.0), n_stable)):
            expected = row * column / n
            statistic += (observed - expected) ** 2 / expected
    return statistic, _gamma_q((len(classes) - 1) / 2.0, statistic / 2.0)


def compare_predictions(
    canary: Mapping[str, float],
    stable: Mapping[str, float],
    max_psi: float,
    confidence: float,
    min_count: float,
) -> Comparison:
    """Does the canary predict classes in different proportions than stable? ``value`` is the PSI of the
    canary's class shares against stable's.

    PSI measures how large the shift is; a chi-square test says whether it is real: with few rows the PSI
    of two identical models is noise (about (classes - 1) · (1/n_canary + 1/n_stable)), so a PSI above the
    limit fails only when the shift is also significant at ``confidence``, and is inconclusive otherwise.
    """
    n_canary = sum(max(v, 0.0) for v in canary.values())
    n_stable = sum(max(v, 0.0) for v in stable.values())
    if (thin := _too_few(n_canary, n_stable, min_count, "predicted rows")) is not None:
        return thin
    value = psi(canary, stable)
    classes = sorted(set(canary) | set(stable))
    a, e = shares(canary, classes), shares(stable, classes)
    top = ", ".join(f"{c} {a[c]:.0%} vs {e[c]:.0%}" for c in classes[:6])
    said = f"prediction PSI {value:.3g} over {n_canary:.0f} canary / {n_stable:.0f} stable rows ({top})"
    if value <= max_psi:
        return Comparison(Verdict.PASS, value, said)
    _, p_value = chi_square_homogeneity(canary, stable)
    if p_value <= 1.0 - confidence:
        return Comparison(Verdict.FAIL, value, f"{said} > {max_psi} (chi-square p = {p_value:.2g})")
    return Comparison(
        Verdict.INCONCLUSIVE, value, f"{said} > {max_psi} but within sampling noise (chi-square p = {p_value:.2g})"
    )


def _too_few(n_canary: float, n_stable: float, min_count: float, what: str) -> Comparison | None:
    """Inconclusive when either track has fewer than ``min_count`` (and at least one) ``what``."""
    if min(n_canary, n_stable) >= max(min_count, 1.0):
        return None
    message = f"{n_canary:.0f} canary and {n_stable:.0f} stable {what}; need {min_count:.0f} of each"
    return Comparison(Verdict.INCONCLUSIVE, None, message)
