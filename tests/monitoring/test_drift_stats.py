"""Drift statistics against brute-force references: PSI over quantile bins and categories, the
missing share, and the thresholds' verdict."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import ks_2samp

from platform_assets.monitoring.drift import (
    EPSILON,
    compare_categorical,
    compare_numeric,
    judge,
    quantile_edges,
)
from platform_assets.tenancy.specs import DriftSeverity, DriftThresholds

values = st.lists(
    st.one_of(st.floats(-1e6, 1e6, allow_nan=False), st.just(math.nan)), min_size=1, max_size=60
)


def brute_psi(reference: list[float], current: list[float], edges: list[float]) -> float:
    """One value at a time: its bin is the number of edges at or below it."""

    def shares(xs):
        counts = [0] * (len(edges) + 1)
        for x in xs:
            counts[sum(1 for e in edges if e <= x)] += 1
        return [c / len(xs) for c in counts]

    total = 0.0
    for r, c in zip(shares(reference), shares(current), strict=True):
        r, c = max(r, EPSILON), max(c, EPSILON)
        total += (c - r) * math.log(c / r)
    return total


@settings(max_examples=80, deadline=None)
@given(values, values, st.integers(2, 12))
def test_numeric_psi_missing_and_ks_match_brute_force(reference, current, bins):
    drift = compare_numeric("x", np.array(reference), np.array(current), bins)
    ref = [x for x in reference if not math.isnan(x)]
    cur = [x for x in current if not math.isnan(x)]
    assert drift.missing_reference == pytest.approx(1 - len(ref) / len(reference))
    assert drift.missing_current == pytest.approx(1 - len(cur) / len(current))
    if not ref or not cur:
        assert drift.psi is None and drift.ks is None
        return
    edges = sorted(set(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]).tolist()))
    assert drift.psi == pytest.approx(brute_psi(ref, cur, edges), rel=1e-9, abs=1e-12)
    # KS: the largest gap between the two empirical CDFs, over every observed value.
    gap = max(
        abs(sum(r <= x for r in ref) / len(ref) - sum(c <= x for c in cur) / len(cur))
        for x in ref + cur
    )
    assert drift.ks == pytest.approx(gap)
    assert drift.ks == pytest.approx(ks_2samp(ref, cur).statistic)
    assert sum(drift.reference_share) == pytest.approx(1) and len(drift.bins) == len(edges) + 1


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.sampled_from(["a", "b", "c", None]), min_size=1, max_size=50),
    st.lists(st.sampled_from(["a", "b", "d", None]), min_size=1, max_size=50),
)
def test_categorical_psi_matches_brute_force(reference, current):
    drift = compare_categorical(
        "c", np.array(reference, dtype=object), np.array(current, dtype=object)
    )
    ref = [x for x in reference if x is not None]
    cur = [x for x in current if x is not None]
    if not ref or not cur:
        assert drift.psi is None
        return
    total = 0.0
    for cat in sorted(set(ref) | set(cur)):
        r = max(ref.count(cat) / len(ref), EPSILON)
        c = max(cur.count(cat) / len(cur), EPSILON)
        total += (c - r) * math.log(c / r)
    assert drift.psi == pytest.approx(total, rel=1e-9, abs=1e-12)
    assert drift.bins == sorted(set(ref) | set(cur))


def test_same_distribution_is_stable_and_a_shift_is_not():
    rng = np.random.default_rng(1)
    reference = rng.normal(size=20_000)
    current, moved = rng.normal(size=50_000), rng.normal(0.5, 1, size=50_000)
    same = compare_numeric("x", reference, current, 10)
    shifted = compare_numeric("x", reference, moved, 10)
    assert same.psi < 0.01 and same.ks < 0.02
    assert shifted.psi > 0.2 and shifted.ks > 0.15
    # The asymptotic p-value is scipy's, but for its finite-sample correction.
    assert same.ks_pvalue == pytest.approx(ks_2samp(reference, current).pvalue, rel=0.05)
    assert shifted.ks_pvalue < 1e-100


def test_tied_quantiles_merge_into_fewer_bins():
    assert quantile_edges(np.array([0.0] * 95 + [1.0] * 5), 10).tolist() == [0.0]


def test_verdict_names_the_statistic_and_follows_the_severity():
    rng = np.random.default_rng(2)
    reference = rng.normal(size=5_000)
    current = np.where(rng.random(5_000) < 0.3, np.nan, rng.normal(1, 1, size=5_000))
    drift = compare_numeric("amount", reference, current, 10)
    verdict = judge(drift, DriftThresholds(), DriftSeverity(missing="block"))
    assert not verdict.passed and verdict.blocking
    assert [f.split(" ")[1] for f in verdict.failures] == ["PSI", "KS", "missing"]
    assert verdict.failures[2].startswith("amount: missing share rise 0.3")
    warned = judge(drift, DriftThresholds(missing=0.5), DriftSeverity(missing="block"))
    assert not warned.passed and not warned.blocking  # only PSI and KS fail, and they warn
    score = judge(drift, DriftThresholds(), DriftSeverity(prediction="block"), prediction=True)
    assert score.blocking
