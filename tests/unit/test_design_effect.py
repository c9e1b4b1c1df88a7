"""Dependent rows: design effects (``skewless.design_effect``), drift p-values that allow for
them (``monitoring.drift``), and the exact missing-rate test at any n."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import hypergeom

from monitoring.drift import (
    detect, detect_samples, missing_pvalue, permutation_pvalue, variance_inflation, wasserstein_counts,
)
from skewless.design_effect import cluster_ids, design_effect, design_effects
from skewless.histograms import CategoricalHistogram, NumericHistogram, summarize, summarize_like
from skewless.settings import MonitoringSettings


def _bursts(rng: np.random.Generator, clusters: int, largest: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Values in clusters of 1-``largest`` identical rows (a burst), and each row's cluster."""
    sizes = rng.integers(1, largest + 1, clusters)
    values = np.repeat(rng.lognormal(3.0, 1.0, clusters), sizes)
    return values, np.repeat(np.arange(clusters), sizes)


# -- design effects -------------------------------------------------------------------------------

@pytest.mark.parametrize("cumulative", [True, False])
def test_the_design_effect_is_its_definition(cumulative):
    rng = np.random.default_rng(1)
    codes, clusters, w = rng.integers(0, 7, 600), rng.integers(0, 150, 600), rng.random(7)
    codes[:5] = -1  # left out (missing)
    keep = codes >= 0
    phi = np.zeros((keep.sum(), 7))
    phi[np.arange(keep.sum()), codes[keep]] = 1
    if cumulative:
        phi = np.cumsum(phi, axis=1)
    dev = phi - phi.mean(axis=0)
    sums = np.zeros((150, 7))
    np.add.at(sums, clusters[keep], dev)
    expected = (w * sums ** 2).sum() / (w * dev ** 2).sum()
    assert design_effect(codes, clusters, w, cumulative) == pytest.approx(max(1.0, expected), rel=1e-9)


def test_independent_rows_count_one_and_identical_rows_count_as_one_per_cluster():
    rng = np.random.default_rng(2)
    x = rng.normal(size=400)
    country = rng.choice(["FR", "DE", "ES"], 400)
    missing = np.where(rng.random(400) < 0.2, np.nan, 1.0)
    ref = summarize({"x": x, "country": country, "m": missing})
    alone = design_effects(ref, {"x": x, "country": country, "m": missing}, np.arange(400))
    assert alone == {name: {"distribution": 1.0, "missing": 1.0} for name in ("x", "country", "m")}
    four = {"x": np.repeat(x[:100], 4), "country": np.repeat(country[:100], 4), "m": np.repeat(missing[:100], 4)}
    fx = design_effects(ref, four, np.repeat(np.arange(100), 4))
    assert fx["x"]["distribution"] == fx["country"]["distribution"] == fx["m"]["missing"] == pytest.approx(4.0)


def test_a_cluster_is_an_entity_within_a_block_of_time():
    t = pd.to_datetime(["2026-01-01T01:00Z", "2026-01-01T23:00Z", "2026-01-02T01:00Z", "2026-01-01T02:00Z",
                        "2026-01-01T03:00Z"]).astype("datetime64[us, UTC]")
    ids = cluster_ids(["a", "a", "a", "b", None], t, "24h")
    assert ids[0] == ids[1] != ids[2] and len(set(ids.tolist())) == 4
    assert len(set(cluster_ids(["a", "a", "a", "b", "b"], t, None).tolist())) == 2


# -- p-values that allow for it -------------------------------------------------------------------

def test_bursts_break_row_permutations_and_their_design_effect_mends_them():
    """Two samples of one process whose rows come in bursts of 1-8 identical values: treated as
    independent rows, the W1 permutation test rejects far more than 5% of the time; allowing
    for the design effect measured on each sample, it is calibrated."""
    rows_rejected = allowed_rejected = 0
    trials = 200
    for seed in range(trials):
        rng = np.random.default_rng(seed)
        (a, ca), (b, cb) = _bursts(rng, 150), _bursts(rng, 150)
        ref = NumericHistogram.reference(a, bins=20)
        live = ref.bin(b)
        w = np.diff(np.concatenate([[min(ref.lo, live.lo)], ref.edges, [max(ref.hi, live.hi)]]))
        obs = float(wasserstein_counts(w, ref.counts, live.counts))
        stat = lambda x, y: wasserstein_counts(w, x, y)  # noqa: E731
        p_rows, _ = permutation_pvalue(stat, ref.counts, live.counts, obs, 200, rng)
        ea = design_effects({"v": ref}, {"v": a}, ca)["v"]["distribution"]
        eb = design_effects({"v": ref}, {"v": b}, cb)["v"]["distribution"]
        c = variance_inflation(ea, len(a), eb, len(b))
        p_allowed, _ = permutation_pvalue(stat, ref.counts, live.counts, obs, 200, rng, inflation=c)
        rows_rejected += p_rows <= 0.05
        allowed_rejected += p_allowed <= 0.05
    assert rows_rejected / trials > 0.25
    assert allowed_rejected / trials <= 0.09


def test_a_bursty_missing_rate_is_calibrated_with_its_design_effect():
    rows_rejected = allowed_rejected = 0
    trials = 300
    for seed in range(trials):
        rng = np.random.default_rng(seed)
        sizes = [rng.integers(1, 9, 200) for _ in range(2)]  # a field broken for a whole burst, or not
        miss = [np.repeat(rng.random(200) < 0.1, s) for s in sizes]
        effects = [design_effects({"m": NumericHistogram.reference(np.zeros(3))}, {"m": np.where(m, np.nan, 0.0)},
                                  np.repeat(np.arange(200), s))["m"]["missing"] for m, s in zip(miss, sizes)]
        args = (int(miss[0].sum()), len(miss[0]), int(miss[1].sum()), len(miss[1]))
        rows_rejected += missing_pvalue(*args) <= 0.05
        c = variance_inflation(effects[0], len(miss[0]), effects[1], len(miss[1]))
        allowed_rejected += missing_pvalue(*args, inflation=c) <= 0.05
    assert rows_rejected / trials > 0.25
    assert allowed_rejected / trials <= 0.08


def test_a_true_shift_is_still_found_in_bursty_data():
    rng = np.random.default_rng(7)
    (a, ca), (b, cb) = _bursts(rng, 2000), _bursts(rng, 2000)
    report = detect_samples({"amount": a}, {"amount": b * 1.5}, MonitoringSettings(), ca, cb)
    signal = report.feature("amount").signals[0]
    assert report.drifted_features == ["amount"] and 3 < signal.inflation < 6


def test_a_reference_without_design_effects_takes_the_live_samples():
    rng = np.random.default_rng(3)
    (a, _), (b, cb) = _bursts(rng, 300), _bursts(rng, 300)
    ref = summarize({"amount": a})
    live = summarize_like(ref, {"amount": b})
    effects = design_effects(ref, {"amount": b}, cb)
    one_sided = detect(ref, live, MonitoringSettings(), None, effects).feature("amount").signals
    both = detect(ref, live, MonitoringSettings(), effects, effects).feature("amount").signals
    rows = detect(ref, live, MonitoringSettings()).feature("amount").signals
    assert [s.inflation for s in one_sided] == [s.inflation for s in both]
    assert one_sided[0].inflation > 2 and rows[0].inflation == 1.0
    # A categorical feature's effect is measured on its shares.
    country = np.repeat(rng.choice(["FR", "DE"], 300), 4)
    cat = design_effects({"c": CategoricalHistogram.reference(country)}, {"c": country}, np.repeat(np.arange(300), 4))
    assert cat["c"]["distribution"] == pytest.approx(4.0)


# -- the missing-rate test, exact and fast ---------------------------------------------------------

def _exact_by_summing(missing_a: int, n_a: int, missing_b: int, n_b: int) -> float:
    """The definition: the probability of every outcome whose rate difference is at least the observed."""
    total, k = n_a + n_b, missing_a + missing_b
    x = np.arange(max(0, n_b - (total - k)), min(k, n_b) + 1)
    diff = np.abs(x / n_b - (k - x) / n_a)
    return float(min(1.0, hypergeom.pmf(x, total, k, n_b)[diff >= abs(missing_b / n_b - missing_a / n_a) - 1e-12].sum()))


def test_the_missing_rate_pvalue_is_the_exact_sum_over_outcomes_at_least_as_extreme():
    for n_a in range(1, 13):
        for n_b in range(1, 13):
            for m_a in range(n_a + 1):
                for m_b in range(n_b + 1):
                    assert missing_pvalue(m_a, n_a, m_b, n_b) == pytest.approx(
                        _exact_by_summing(m_a, n_a, m_b, n_b), rel=1e-9, abs=1e-15), (m_a, n_a, m_b, n_b)
    rng = np.random.default_rng(0)
    for _ in range(200):
        n_a, n_b = (int(v) for v in rng.integers(50, 5000, 2))
        m_a, m_b = int(rng.binomial(n_a, 0.05)), int(rng.binomial(n_b, 0.06))
        assert missing_pvalue(m_a, n_a, m_b, n_b) == pytest.approx(_exact_by_summing(m_a, n_a, m_b, n_b), rel=1e-9)


def test_the_missing_rate_pvalue_takes_its_tails_at_any_n():
    # A column turning null at n = 1,000,000: the tails, not a million-term sum.
    assert missing_pvalue(20_000, 1_000_000, 1_000_000, 1_000_000) == 0.0
    assert missing_pvalue(20_000, 1_000_000, 20_000, 1_000_000) == pytest.approx(1.0)
    assert 0.01 < missing_pvalue(20_000, 1_000_000, 20_300, 1_000_000) < 0.2
