"""Drift detection (monitoring/drift.py, monitoring/histograms.py): flags real shifts, stays
quiet on none (fixed seeds), sees a column turning null and a new category, computes the
same statistics from histograms as from the raw samples, and reads its settings."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from monitoring.drift import (
    baseline_pvalue, detect, detect_samples, holm, js_distance, missing_pvalue, normalised_wasserstein,
    permutation_pvalue, reference_histograms, wasserstein_counts,
)
from skewless.histograms import CategoricalHistogram, NumericHistogram, from_dict, summarize, summarize_like
from skewless.errors import ConfigError, DataError
from skewless.settings import MonitoringSettings, load_settings

COUNTRIES = np.array(["FR", "DE", "ES", "IT", "NL"])
SHARES = [0.40, 0.25, 0.15, 0.12, 0.08]


def frame(seed: int, n: int, shift: float = 0.0, missing: float = 0.02) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.normal(100.0, 30.0, n)
    age[rng.random(n) < missing] = np.nan
    return pd.DataFrame({
        "x": rng.normal(0.0, 1.0, n) + shift,
        "amount": rng.lognormal(3.0, 1.0, n),
        "count": rng.poisson(3.0, n),
        "country": COUNTRIES[rng.choice(5, size=n, p=SHARES)],
        "age": age,
    })


S = MonitoringSettings()


# -- verdicts -------------------------------------------------------------------------------------

def test_a_half_sigma_shift_at_n_5000_is_flagged_on_that_feature_only():
    report = detect_samples(frame(1, 5000), frame(2, 5000, shift=0.5), S)
    assert report.drifted
    assert report.drifted_features == ["x"]
    x = report.feature("x").signals[0]
    assert x.statistic == "wasserstein_norm" and 0.4 < x.value < 0.6  # measured in sigmas
    assert x.p_adjusted <= S.alpha


@pytest.mark.parametrize("n", [500, 5000])
def test_no_shift_is_not_flagged_for_a_fixed_set_of_seeds(n):
    flagged = {}
    for seed in range(10):
        report = detect_samples(frame(100 + seed, n), frame(200 + seed, n), S)
        if report.drifted:
            flagged[seed] = report.drifted_features
    assert flagged == {}


def test_a_negligible_shift_is_not_flagged_at_large_n_where_raw_ks_is():
    ref, live = frame(3, 50_000), frame(4, 50_000, shift=0.05)
    report = detect_samples(ref, live, S)
    assert not report.drifted
    assert report.feature("x").signals[0].note.startswith("below its threshold")
    assert baseline_pvalue(ref["x"], live["x"], "numeric") < 0.05  # the raw test calls it drift


def test_a_column_turning_null_is_flagged():
    ref, live = frame(5, 2000), frame(6, 2000)
    live["age"] = None
    report = detect_samples(ref, live, S)
    age = report.feature("age")
    assert age.drifted and report.drifted_features == ["age"]
    dist, miss = age.signals
    assert dist.value is None and dist.note == "no values in the live sample"
    assert miss.drifted and miss.value == pytest.approx(1.0 - age.missing_rate_reference)
    # The raw test on the non-missing values cannot see it.
    assert math.isnan(baseline_pvalue(ref["age"], live["age"], "numeric"))


def test_a_partly_null_column_is_flagged_by_its_missing_rate():
    report = detect_samples(frame(7, 5000, missing=0.02), frame(8, 5000, missing=0.07), S)
    assert report.drifted_features == ["age"]
    miss = report.feature("age").signals[1]
    assert miss.signal == "missing" and miss.drifted and 0.04 < miss.value < 0.06


def test_a_new_category_is_flagged_and_named():
    ref = frame(9, 5000)
    live = frame(10, 5000)
    live.loc[live.index[:500], "country"] = "XX"
    report = detect_samples(ref, live, S)
    country = report.feature("country")
    assert report.drifted_features == ["country"]
    assert country.details["new_categories"] == ["XX"]
    assert country.details["new_categories_share"] == pytest.approx(0.1)


def test_a_five_point_category_share_shift_is_flagged():
    ref = frame(11, 5000)
    rng = np.random.default_rng(12)
    live = frame(12, 5000)
    live["country"] = COUNTRIES[rng.choice(5, size=5000, p=[0.35, 0.30, 0.15, 0.12, 0.08])]
    assert detect_samples(ref, live, S).drifted_features == ["country"]


def test_one_wild_value_does_not_flag_a_feature():
    ref, live = frame(13, 5000), frame(14, 5000)
    live.loc[0, "x"] = 1e12
    report = detect_samples(ref, live, S)
    assert not report.drifted
    assert report.feature("x").signals[0].value < 0.05


def test_the_report_is_json_and_seeded():
    a = detect_samples(frame(15, 1000), frame(16, 1000, shift=0.3), S).to_dict()
    b = detect_samples(frame(15, 1000), frame(16, 1000, shift=0.3), S).to_dict()
    assert json.loads(json.dumps(a)) == a == b
    assert a["drifted_features"] == ["x"] and a["correction"] == "holm"


# -- calibration ----------------------------------------------------------------------------------

def test_permutation_pvalues_are_calibrated_under_no_shift():
    """At n = 200 the threshold does not decide (noise alone often exceeds 0.1 sigma): the
    p-value must. Over 200 seeded no-shift pairs, P(p <= 0.05) stays near 0.05."""
    small = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        ref = NumericHistogram.reference(rng.normal(size=200), bins=20)
        live = ref.bin(rng.normal(size=200))
        w = np.diff(np.concatenate([[min(ref.lo, live.lo)], ref.edges, [max(ref.hi, live.hi)]]))
        obs = float(wasserstein_counts(w, ref.counts, live.counts))
        p, _ = permutation_pvalue(lambda a, b: wasserstein_counts(w, a, b), ref.counts, live.counts, obs, 200, rng)
        small += p <= 0.05
    assert small / 200 <= 0.09


def test_a_clear_shift_gets_a_small_pvalue():
    rng = np.random.default_rng(0)
    ref = NumericHistogram.reference(rng.normal(size=300))
    live = ref.bin(rng.normal(size=300) + 1.0)
    w = np.diff(np.concatenate([[min(ref.lo, live.lo)], ref.edges, [max(ref.hi, live.hi)]]))
    obs = float(wasserstein_counts(w, ref.counts, live.counts))
    p, draws = permutation_pvalue(lambda a, b: wasserstein_counts(w, a, b), ref.counts, live.counts, obs, 500, rng)
    assert p == pytest.approx(1 / 501) and draws == 500


def test_missing_pvalue_is_fishers_exact_test():
    p = missing_pvalue(10, 1000, 25, 1000)
    assert p == pytest.approx(stats.fisher_exact([[10, 990], [25, 975]]).pvalue, rel=1e-6)
    assert missing_pvalue(5, 100, 5, 100) == pytest.approx(1.0)


def test_holm_adjusted_pvalues():
    # Sorted p: .01 .02 .03 .04 with m = 4 -> .04, max(.04,.06)=.06, max(.06,.06)=.06, max(.06,.04)=.06
    assert holm([0.03, 0.01, 0.04, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert holm([None, 0.01]) == pytest.approx([1.0, 0.02])


def test_the_number_of_permutations_grows_with_the_number_of_tests():
    many = {f"f{i}": np.random.default_rng(i).normal(size=100) for i in range(30)}
    report = detect_samples(many, many, MonitoringSettings(permutations=100))
    assert report.tests == 60 and report.permutations == math.ceil(2 * 60 / 0.05)


# -- histograms against raw samples ---------------------------------------------------------------

@pytest.mark.parametrize("make,shift", [
    (lambda r, n: r.normal(size=n), 0.0), (lambda r, n: r.normal(size=n), 0.25), (lambda r, n: r.normal(size=n), 0.5),
    (lambda r, n: r.normal(size=n) * 10 + 3, 5.0), (lambda r, n: r.lognormal(3, 1, n), 0.0),
    (lambda r, n: r.lognormal(3, 1, n), 8.0), (lambda r, n: r.poisson(3, n).astype(float), 1.0),
])
def test_wasserstein_from_histograms_matches_the_raw_samples(make, shift):
    rng = np.random.default_rng(21)
    a, b = make(rng, 20_000), make(rng, 20_000) + shift
    ref = NumericHistogram.reference(a)
    ours = normalised_wasserstein(ref, ref.bin(b))
    raw = stats.wasserstein_distance(a, b) / ref.scale()
    assert ours == pytest.approx(raw, rel=0.05, abs=0.005)


def test_the_robust_scale_is_sigma_for_a_normal_sample():
    ref = NumericHistogram.reference(np.random.default_rng(1).normal(5.0, 2.0, 50_000))
    assert ref.scale() == pytest.approx(2.0, rel=0.02)
    assert ref.mean == pytest.approx(5.0, abs=0.05) and ref.std == pytest.approx(2.0, rel=0.02)


def test_categorical_statistics_from_histograms_equal_the_raw_shares():
    rng = np.random.default_rng(2)
    a = COUNTRIES[rng.choice(5, size=10_000, p=SHARES)]
    b = COUNTRIES[rng.choice(5, size=8_000, p=[0.3, 0.3, 0.2, 0.1, 0.1])]
    ref = CategoricalHistogram.reference(a)
    live = ref.bin(b)
    pa = pd.Series(a).value_counts(normalize=True).reindex(COUNTRIES).to_numpy()
    pb = pd.Series(b).value_counts(normalize=True).reindex(COUNTRIES).to_numpy()
    assert js_distance(ref, live) == pytest.approx(jensenshannon(pa, pb, base=2), rel=1e-9)


def test_missing_rates_are_exact():
    values = [1.0, None, 2.0, float("nan"), 3.0, float("inf")]
    h = NumericHistogram.reference(values)
    assert (h.n, h.missing, h.n_values) == (6, 3, 3)  # null, NaN and non-finite are missing
    c = CategoricalHistogram.reference(["a", None, "b", "a"])
    assert c.missing_rate == 0.25 and c.counts == {"a": 2, "b": 1}


def test_histograms_merge_exactly_and_round_trip():
    rng = np.random.default_rng(3)
    ref = NumericHistogram.reference(rng.normal(size=5000))
    a, b = rng.normal(size=3000), rng.normal(size=2000)
    merged = ref.bin(a).merge(ref.bin(b))
    whole = ref.bin(np.concatenate([a, b]))
    assert np.array_equal(merged.counts, whole.counts) and merged.lo == whole.lo and merged.hi == whole.hi
    assert merged.mean == pytest.approx(whole.mean)
    back = from_dict(json.loads(json.dumps(whole.to_dict())))
    assert np.array_equal(back.counts, whole.counts) and np.array_equal(back.edges, whole.edges)
    cat = CategoricalHistogram.reference(["a", "b", None])
    assert from_dict(cat.to_dict()).to_dict() == cat.to_dict()


def test_a_histogram_is_small_whatever_the_sample_size():
    big = NumericHistogram.reference(np.random.default_rng(4).normal(size=1_000_000))
    assert len(big.counts) <= 110 and len(json.dumps(big.to_dict())) < 5_000


def test_categories_are_the_same_whichever_way_they_are_carried():
    ref = CategoricalHistogram.reference(pd.Series([True, False, True, True]))
    assert ref.counts == {"1": 3, "0": 1}
    live = ref.bin(np.array([1.0, 0.0, 1.0]))  # the prediction log's JSON numbers
    assert live.counts == {"1": 2, "0": 1} and live.other == 0
    codes = CategoricalHistogram.reference(np.array([3, 7, 7]))
    assert codes.bin([7.0, "3", None]).counts == {"7": 1, "3": 1}


def test_rare_categories_beyond_the_cap_are_other_not_new():
    ref = CategoricalHistogram.reference([f"c{i}" for i in range(20)] * 5 + ["a"] * 200, max_categories=5)
    assert ref.other == 80
    live = ref.bin(["c19", "c18", "a"])  # tail categories of the reference: not new
    assert live.other == 2 and set(live.counts) == set(ref.counts)


# -- errors and settings --------------------------------------------------------------------------

def test_bad_inputs_are_one_clear_error():
    ref = summarize({"x": [1.0, 2.0, 3.0]})
    with pytest.raises(DataError, match="no column x"):
        summarize_like(ref, {"y": [1.0]})
    with pytest.raises(DataError, match="x: not numeric"):
        ref["x"].bin(["a", "b"], name="x")
    other = NumericHistogram.reference([10.0, 20.0, 30.0, 40.0])
    with pytest.raises(DataError, match="different edges"):
        detect(ref, {"x": other}, S)


def test_settings_thresholds_and_overrides_apply():
    ref, live = frame(17, 5000), frame(18, 5000, shift=0.3)
    assert detect_samples(ref, live, S).drifted_features == ["x"]
    higher = MonitoringSettings(features={"x": {"threshold": 0.5}})
    assert not detect_samples(ref, live, higher).drifted
    ignored = detect_samples(ref, live, MonitoringSettings(features={"x": {"ignore": True}}))
    assert "x" not in [f.name for f in ignored.features] and not ignored.drifted
    as_category = reference_histograms(ref, MonitoringSettings(features={"count": {"kind": "categorical"}}))
    assert as_category["count"].kind == "categorical"


def test_monitoring_settings_load_and_validate(tmp_path, monkeypatch):
    cfg = tmp_path / "skewless.yaml"
    cfg.write_text("monitoring:\n  alpha: 0.01\n  thresholds: {numeric: 0.2}\n"
                   "  features:\n    amount: {threshold: 0.3, missing_threshold: 0.05}\n")
    s = load_settings(cfg)
    assert s.monitoring.alpha == 0.01
    assert s.monitoring.for_feature("amount", "numeric") == (0.3, 0.05)
    assert s.monitoring.for_feature("x", "numeric") == (0.2, 0.01)
    assert s.monitoring.for_feature("x", "categorical") == (0.03, 0.01)
    monkeypatch.setenv("SKEWLESS_MONITORING__ALPHA", "0.02")
    assert load_settings(cfg).monitoring.alpha == 0.02


@pytest.mark.parametrize("text,named", [
    ("monitoring:\n  alpha: 0\n", "monitoring.alpha"),
    ("monitoring:\n  alpha: 0.7\n", "monitoring.alpha"),
    ("monitoring:\n  thresholds: {numeric: -1}\n", "monitoring.thresholds.numeric"),
    ("monitoring:\n  thresholds: {missing: 2}\n", "monitoring.thresholds.missing"),
    ("monitoring:\n  features: {country: {kind: categorical, threshold: 1.5}}\n", "at most 1"),
    ("monitoring:\n  features: {x: {kind: ordinal}}\n", "monitoring.features.x.kind"),
    ("monitoring:\n  features: {x: {treshold: 0.2}}\n", "unknown key 'monitoring.features.x.treshold'"),
    ("monitoring:\n  permutations: 10\n", "monitoring.permutations"),
])
def test_bad_monitoring_settings_are_named(tmp_path, text, named):
    cfg = tmp_path / "skewless.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=named):
        load_settings(cfg)
