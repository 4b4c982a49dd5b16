"""The canary-vs-stable statistics: numerics against closed forms, verdict tables, and properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from model_operator.analysis.statistics import (
    Beta,
    beta_cdf,
    beta_sf,
    binomial_tail,
    bucket_quantile,
    chi_square_homogeneity,
    compare_error_rates,
    compare_latency,
    compare_predictions,
    count_above,
    cumulative_buckets,
    probability_greater,
    psi,
)
from model_operator.spec import Verdict

ORDER = {Verdict.FAIL: 0, Verdict.INCONCLUSIVE: 1, Verdict.PASS: 2}


def miller(canary: Beta, stable: Beta) -> float:
    """P(canary > stable) for integer beta parameters in closed form (Evan Miller's sum), in log space."""
    a_s, b_s, a_c, b_c = int(stable.a), int(stable.b), int(canary.a), int(canary.b)

    def log_beta(a: float, b: float) -> float:
        return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)

    return math.fsum(
        math.exp(log_beta(a_s + i, b_c + b_s) - math.log(b_c + i) - log_beta(1 + i, b_c) - log_beta(a_s, b_s))
        for i in range(a_c)
    )


# --- numerics ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("x", [0.001, 0.1, 0.37, 0.5, 0.9, 0.999])
def test_incomplete_beta_matches_closed_forms(x: float) -> None:
    assert beta_cdf(x, 2, 2) == pytest.approx(3 * x**2 - 2 * x**3, rel=1e-12)
    assert beta_cdf(x, 1, 7) == pytest.approx(1 - (1 - x) ** 7, rel=1e-12)
    assert beta_cdf(x, 5, 1) == pytest.approx(x**5, rel=1e-12)
    assert beta_cdf(x, 3, 4) + beta_sf(x, 3, 4) == pytest.approx(1.0, abs=1e-14)
    assert beta_cdf(0.5, 40.0, 40.0) == pytest.approx(0.5, abs=1e-12)
    # I_x(a, b) for integers is a binomial tail: P(Binomial(a + b - 1, x) >= a)
    n, a = 12, 4
    tail = sum(math.comb(n, j) * x**j * (1 - x) ** (n - j) for j in range(a, n + 1))
    assert beta_cdf(x, a, n - a + 1) == pytest.approx(tail, rel=1e-10, abs=1e-300)


def test_incomplete_beta_edges_and_large_parameters() -> None:
    assert beta_cdf(0.0, 3, 3) == 0.0
    assert beta_cdf(1.0, 3, 3) == 1.0
    # Beta(1e4, 1e6) is nearly normal: mean 0.0099, sd ~ 9.8e-5
    mean = 1e4 / (1e4 + 1e6)
    assert beta_cdf(mean, 1e4, 1e6) == pytest.approx(0.5, abs=0.01)
    assert beta_cdf(mean + 6 * 9.85e-5, 1e4, 1e6) > 0.999_999


def test_binomial_tail() -> None:
    assert binomial_tail(0, 100, 0.01) == 1.0
    assert binomial_tail(1, 30, 0.001) == pytest.approx(1 - 0.999**30, rel=1e-12)
    assert binomial_tail(2, 150, 0.005) == pytest.approx(1 - 0.995**150 - 150 * 0.005 * 0.995**149, rel=1e-10)


@pytest.mark.parametrize(
    ("canary", "stable"),
    [((0, 20), (0, 400)), ((2, 150), (6, 5700)), ((7, 150), (17, 17100)), ((3, 3000), (5, 3000)),
     ((0, 5), (0, 5)), ((500, 100_000), (480, 100_000)), ((1, 1), (0, 1)), ((0, 0), (0, 0))],
)  # fmt: skip
def test_probability_greater_without_margin_matches_the_closed_form(
    canary: tuple[int, int], stable: tuple[int, int]
) -> None:
    c, s = Beta.posterior(*canary), Beta.posterior(*stable)
    assert probability_greater(c, s) == pytest.approx(miller(c, s), abs=1e-6)
    assert probability_greater(c, s) + probability_greater(s, c) == pytest.approx(1.0, abs=1e-6)


def test_probability_greater_with_a_margin() -> None:
    uniform = Beta(1, 1)
    for margin in (0.0, 0.1, 0.5, 0.9):
        assert probability_greater(uniform, uniform, margin) == pytest.approx((1 - margin) ** 2 / 2, abs=1e-9)
    c, s = Beta.posterior(2, 150), Beta.posterior(6, 5700)
    values = [probability_greater(c, s, m) for m in (0.0, 0.001, 0.004, 0.01, 0.05)]
    assert values == sorted(values, reverse=True), "a larger margin is never easier to exceed"


# --- error rates -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("canary", "stable", "margin", "confidence", "verdict"),
    [
        ((15, 300), (17, 17100), 0.004, 0.95, Verdict.FAIL),  # 5 % vs 0.1 %
        ((2, 150), (17, 17100), 0.004, 0.95, Verdict.FAIL),  # enough, just: 2 in 150 at a 0.1 % stable
        ((2, 150), (17, 17100), 0.004, 0.99, Verdict.INCONCLUSIVE),  # not at 99 %
        ((1, 150), (17, 17100), 0.004, 0.95, Verdict.INCONCLUSIVE),
        ((1, 30), (3, 3400), 0.004, 0.95, Verdict.FAIL),  # 1 in 30 is unlikely at 0.1 % (p = 0.04)...
        ((1, 60), (3, 3400), 0.004, 0.95, Verdict.INCONCLUSIVE),  # ...1 in 60 is not (p = 0.07)
        ((0, 20), (17, 17100), 0.004, 0.95, Verdict.INCONCLUSIVE),  # thin evidence: neither way
        ((0, 300), (17, 17100), 0.004, 0.95, Verdict.INCONCLUSIVE),
        ((0, 900), (17, 17100), 0.004, 0.95, Verdict.PASS),
        ((3, 1500), (8, 1500), 0.004, 0.95, Verdict.PASS),  # better than stable
        ((10, 1000), (10, 1000), 0.0, 0.95, Verdict.INCONCLUSIVE),  # identical, no margin: 50/50
        ((10, 10_000), (10, 10_000), 0.005, 0.95, Verdict.PASS),
        ((5, 0), (17, 17100), 0.004, 0.95, Verdict.INCONCLUSIVE),  # no canary requests
        ((0, 100), (0, 0), 0.004, 0.95, Verdict.INCONCLUSIVE),  # no stable requests
    ],
)
def test_error_rate_verdicts(
    canary: tuple[int, int], stable: tuple[int, int], margin: float, confidence: float, verdict: Verdict
) -> None:
    result = compare_error_rates(*canary, *stable, margin, confidence)
    assert result.verdict is verdict, result.message
    if canary[1] and stable[1]:
        assert result.value is not None
        assert 0.0 <= result.value <= 1.0


def test_a_uniform_prior_alone_never_fails_a_canary() -> None:
    """0 errors in 5 requests: the prior puts 97 % above a 0.5-point margin, but nothing was observed."""
    result = compare_error_rates(0, 5, 0, 10_000, 0.005, 0.95)
    assert result.value is not None
    assert result.value > 0.95
    assert result.verdict is Verdict.INCONCLUSIVE


def test_extrapolated_counts_are_accepted() -> None:
    """increase() returns fractions, and now and then more errors than requests."""
    assert compare_error_rates(15.4, 299.7, 17.2, 17_100.9, 0.004, 0.95).verdict is Verdict.FAIL
    assert compare_error_rates(31.0, 30.0, 0.0, 1000.0, 0.004, 0.95).verdict is Verdict.FAIL


counts = st.integers(min_value=1, max_value=5000)
margins = st.sampled_from([0.0, 0.001, 0.004, 0.01, 0.05])
confidences = st.sampled_from([0.9, 0.95, 0.99])


@settings(max_examples=150, deadline=None)
@given(
    total=counts, errors=st.integers(0, 5000), stable_total=counts, stable_errors=st.integers(0, 5000),
    margin=margins, confidence=confidences,
)  # fmt: skip
def test_more_canary_errors_never_make_the_verdict_better(
    total: int, errors: int, stable_total: int, stable_errors: int, margin: float, confidence: float
) -> None:
    errors, stable_errors = min(errors, total - 1), min(stable_errors, stable_total)
    fewer = compare_error_rates(errors, total, stable_errors, stable_total, margin, confidence)
    one_more = compare_error_rates(errors + 1, total, stable_errors, stable_total, margin, confidence)
    added = compare_error_rates(errors + 1, total + 1, stable_errors, stable_total, margin, confidence)
    assert ORDER[one_more.verdict] <= ORDER[fewer.verdict]
    assert ORDER[added.verdict] <= ORDER[fewer.verdict]
    assert fewer.value is not None
    assert one_more.value is not None
    assert one_more.value >= fewer.value - 1e-6  # quadrature is good to ~1e-6


@settings(max_examples=100, deadline=None)
@given(total=st.integers(1000, 200_000), rate=st.floats(0.0, 0.2), margin=margins, confidence=confidences)
def test_identical_data_never_fails_at_high_counts(total: int, rate: float, margin: float, confidence: float) -> None:
    errors = round(total * rate)
    result = compare_error_rates(errors, total, errors, total, margin, confidence)
    assert result.verdict is not Verdict.FAIL
    assert result.value is not None
    assert result.value <= 0.5 + 1e-5  # quadrature is good to ~1e-6


@settings(max_examples=100, deadline=None)
@given(
    total=st.integers(1, 20), stable_total=st.integers(100, 100_000), stable_rate=st.floats(0.0, 0.01),
    margin=st.floats(0.0, 0.05), confidence=confidences,
)  # fmt: skip
def test_thin_evidence_is_inconclusive(
    total: int, stable_total: int, stable_rate: float, margin: float, confidence: float
) -> None:
    """A canary that has answered up to 20 requests without an error is neither failed nor passed."""
    result = compare_error_rates(0, total, round(stable_total * stable_rate), stable_total, margin, confidence)
    assert result.verdict is Verdict.INCONCLUSIVE


@settings(max_examples=60, deadline=None)
@given(total=st.integers(20, 400), stable_total=st.integers(100, 100_000), margin=margins)
def test_thin_evidence_never_promotes(total: int, stable_total: int, margin: float) -> None:
    """Whatever the canary shows, a Pass needs enough requests to bound its rate below stable + margin."""
    assume(total * (margin + 0.002) < 0.5)  # fewer requests than the margin needs to be told apart
    for errors in range(3):
        result = compare_error_rates(errors, total, 0, stable_total, margin, 0.95)
        assert result.verdict is not Verdict.PASS, result.message


# --- latency from buckets ----------------------------------------------------------------------------------

LE = ["0.001", "0.002", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "+Inf"]


def buckets(per_bucket: list[float]) -> dict[str, float]:
    """Cumulative ``{le: count}`` from counts per bucket."""
    running, out = 0.0, {}
    for le, count in zip(LE, per_bucket, strict=True):
        running += count
        out[le] = running
    return out


def test_bucket_quantile_interpolates_like_histogram_quantile() -> None:
    b = cumulative_buckets(buckets([0, 50, 40, 10, 0, 0, 0, 0, 0]))
    # rank 95 of 100 falls in (0.005, 0.01]: 90 below, 10 inside -> halfway
    assert bucket_quantile(b, 0.95) == pytest.approx(0.0075)
    assert bucket_quantile(b, 0.5) == pytest.approx(0.002)
    assert bucket_quantile(cumulative_buckets({"+Inf": 0}), 0.95) is None
    assert bucket_quantile(cumulative_buckets(buckets([0, 0, 0, 0, 0, 0, 0, 90, 10])), 0.95) == 0.25
    assert count_above(b, 0.0075) == pytest.approx(5.0)
    assert count_above(b, 1.0) == 0.0
    assert count_above(cumulative_buckets(buckets([0, 0, 0, 0, 0, 0, 0, 90, 10])), 1.0) == 10.0


def test_non_monotonic_buckets_are_fixed() -> None:
    assert cumulative_buckets({"0.1": 5.2, "0.2": 5.0, "+Inf": 6.0}) == [(0.1, 5.2), (0.2, 5.2), (math.inf, 6.0)]


@pytest.mark.parametrize(
    ("canary", "stable", "verdict"),
    [
        ([0, 500, 400, 100, 0, 0, 0, 0, 0], [0, 5000, 4000, 1000, 0, 0, 0, 0, 0], Verdict.PASS),  # same
        ([0, 0, 0, 0, 0, 500, 400, 100, 0], [0, 5000, 4000, 1000, 0, 0, 0, 0, 0], Verdict.FAIL),  # 10x slower
        ([0, 20, 40, 35, 5, 0, 0, 0, 0], [0, 5000, 4000, 1000, 0, 0, 0, 0, 0], Verdict.INCONCLUSIVE),  # ~5 % above
        ([0, 5, 4, 1, 0, 0, 0, 0, 0], [0, 5000, 4000, 1000, 0, 0, 0, 0, 0], Verdict.INCONCLUSIVE),  # < min
    ],
)
def test_latency_verdicts(canary: list[float], stable: list[float], verdict: Verdict) -> None:
    result = compare_latency(buckets(canary), buckets(stable), ratio=1.5, confidence=0.95, min_count=50)
    assert result.verdict is verdict, result.message


def test_latency_ratio_value_is_the_p95_ratio() -> None:
    stable = buckets([0, 5000, 4000, 1000, 0, 0, 0, 0, 0])
    canary = buckets([0, 0, 0, 0, 0, 500, 400, 100, 0])
    result = compare_latency(canary, stable, ratio=2, confidence=0.95, min_count=50)
    assert result.value == pytest.approx(0.175 / 0.0075)


# --- prediction drift --------------------------------------------------------------------------------------


def test_psi() -> None:
    same = {"setosa": 30, "versicolor": 30, "virginica": 40}
    assert psi(same, {k: 10 * v for k, v in same.items()}) == pytest.approx(0.0, abs=1e-12)
    shifted = psi({"a": 60, "b": 40}, {"a": 50, "b": 50})
    assert shifted == pytest.approx(0.1 * math.log(0.6 / 0.5) + 0.1 * math.log(0.5 / 0.4))
    constant = psi({"setosa": 100}, {"setosa": 33, "versicolor": 33, "virginica": 34})
    assert constant > 5  # the missing classes are floored at 1e-4, not infinite


def test_chi_square_p_values_match_the_tables() -> None:
    # 2x2 table with chi-square 3.841 has p = 0.05 (df 1); a 2x3 one with 5.991 has p = 0.05 (df 2)
    statistic, p = chi_square_homogeneity({"a": 60, "b": 40}, {"a": 40, "b": 60})
    assert statistic == pytest.approx(8.0)
    assert p == pytest.approx(math.erfc(math.sqrt(8.0 / 2)), rel=1e-9)
    _, p3 = chi_square_homogeneity({"a": 10, "b": 10, "c": 10}, {"a": 10, "b": 10, "c": 10})
    assert p3 == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("canary", "stable", "verdict"),
    [
        ({"setosa": 300}, {"setosa": 1000, "versicolor": 1000, "virginica": 1000}, Verdict.FAIL),  # constant class
        ({"setosa": 95, "versicolor": 105, "virginica": 100}, {"setosa": 1000, "versicolor": 1000, "virginica": 1000},
         Verdict.PASS),
        ({"setosa": 40}, {"setosa": 1000, "versicolor": 1000, "virginica": 1000}, Verdict.INCONCLUSIVE),  # < min
        ({"setosa": 60, "versicolor": 0, "virginica": 40}, {"setosa": 1000, "versicolor": 1000, "virginica": 1000},
         Verdict.FAIL),
        ({"a": 52, "b": 48}, {"a": 50, "b": 50}, Verdict.PASS),
        # PSI over the limit but within noise: 100 rows of 2 classes, 65/35 vs 50/50 of 100 (p ~ 0.03) at 0.99
        ({"a": 65, "b": 35}, {"a": 50, "b": 50}, Verdict.INCONCLUSIVE),
    ],
)  # fmt: skip
def test_prediction_drift_verdicts(canary: dict[str, float], stable: dict[str, float], verdict: Verdict) -> None:
    result = compare_predictions(canary, stable, max_psi=0.08, confidence=0.99, min_count=100)
    assert result.verdict is verdict, result.message


@settings(max_examples=100, deadline=None)
@given(shares=st.lists(st.integers(1, 50), min_size=2, max_size=6), rows=st.integers(2, 50))
def test_the_same_class_mix_never_fails(shares: list[int], rows: int) -> None:
    stable = {f"c{i}": float(s * 100) for i, s in enumerate(shares)}
    canary = {f"c{i}": float(s * rows) for i, s in enumerate(shares)}
    assert compare_predictions(canary, stable, 0.2, 0.95, 100).verdict is not Verdict.FAIL
