"""Drift: per-feature two-sample statistics between a reference sample (the champion's
training set) and a live sample (the prediction log), each with a verdict whose
false-positive rate is controlled at every sample size, and a dataset verdict.

Every statistic is computed from binned histograms (``skewless.histograms``), never from
raw rows. Per feature, two signals:

* **distribution** — numeric: the Wasserstein-1 distance between the two distributions of
  the non-missing values, over the reference's robust standard deviation (IQR / 1.349), so
  0.5 means "moved by half a standard deviation" (a 0.5 sigma mean shift measures 0.5, a
  variance x1.5 about 0.18). Values farther than the reference's 0.1%-99.9% range (or 6
  robust sigmas, whichever is wider) beyond it count as if that far: one wild value cannot
  dominate. Categorical: the Jensen-Shannon distance (base 2, in [0, 1]) between the
  category shares.
* **missing** — the change of the missing rate (live minus reference), its own signal: a
  column turning null is flagged whatever its values do.

Reported alongside, not used for verdicts: PSI (and, for numerics, the JS distance) on ten
reference-decile bins, means and standard deviations, new categories.

**A signal drifts when it is material and significant** (both):

1. *material*: its statistic is at least the feature's threshold (``monitoring.thresholds``,
   per-feature overrides in ``monitoring.features``). A threshold is an effect size — a
   tenth of a standard deviation, a share of rows — whose meaning does not change with n.
   This is what keeps the check quiet at large n: a raw test (KS) is consistent against
   *every* difference, so with 50,000 rows a shift of 0.05 sigma that nobody should act on
   is "significant" almost surely (``skewless bench drift`` measures it).
2. *significant*: its p-value, Holm-corrected over every signal of every feature, is at
   most ``monitoring.alpha``. The threshold alone does not control false positives — the
   statistics are biased upwards and noisy at small n (a 500-row window of a stable
   feature often measures W1/sigma > 0.1) — so each p-value is calibrated on the samples'
   own sizes: a **permutation test on the histograms**. Under no drift the live rows are a
   random subset of the pooled rows, so the live histogram is multivariate-hypergeometric
   given the pooled counts; drawing it ``permutations`` times gives the statistic's exact
   permutation distribution (for the binned statistic), at a cost that does not grow with
   n. The missing-rate p-value is the exact hypergeometric (Fisher) test, taken from the
   distribution's two tails (CDF and survival function), not summed outcome by outcome:
   the same figure at a cost that does not grow with n. Permutations
   stop early once 10 draws exceed the observed value (Besag & Clifford's sequential
   p-value, valid as it stands), so a quiet feature costs a few dozen draws.

   **Dependent rows.** A permutation test is only as good as its exchangeability: it
   assumes each row could as well have landed in the other sample. Fraud breaks that — a
   compromised card makes 3-8 large payments within minutes, and the whole burst lands in
   one window — so between two windows of one stable process the amount's tail moves more
   than reshuffling rows can (on simulated traffic: 4 false alarms in 20 seeds at alpha
   0.05). Permuting whole clusters would be the exact fix, but the reference is a histogram
   with no rows to regroup. So each sample's dependence is measured as a **design effect**
   per signal (``skewless.design_effect``: clusters are a card's rows within one 24h block,
   ``monitoring.cluster_key`` / ``cluster_block``; training measures the reference's and
   saves it with the histograms, a check measures the live sample's from the prediction
   log), and the p-value allows for it (a first-order Rao-Scott correction): the difference
   of the two samples' shares varies ``c = (deff_ref / n_ref + deff_live / n_live) /
   (1 / n_ref + 1 / n_live)`` times more than between independent rows, and every statistic
   here is homogeneous of degree one in that difference (W1 and the missing-rate change
   exactly, the JS distance locally), so the test compares the permutation draws with
   ``observed / sqrt(c)``. With independent rows (or no cluster ids) c = 1 and nothing
   changes; an effect below 1 counts as 1; a reference saved without effects takes the live
   sample's (under the null hypothesis both windows come from one process, dependence
   included). What it does not cover: dependence beyond a card's day (e.g. one customer's
   habits over weeks), which the reference and live windows largely share.

   A signal below its threshold cannot drift: it is not tested and its p-value counts as 1
   in the correction (raising p-values only removes Holm rejections, so the family-wise
   error stays at most alpha) — at large n almost every quiet signal is settled without a
   single permutation.

**Why Holm.** The dataset verdict is "some feature drifted", and the false-positive budget
is the probability of raising that alarm when nothing drifted: a family-wise error rate.
Holm's step-down controls it at alpha under *any* dependence between the tests (a fraud
model's features are strongly correlated: counts over 1 h and 24 h, sums and means), is
uniformly more powerful than Bonferroni, and keeps per-feature verdicts meaningful even
when some features truly drift (strong control). Benjamini-Hochberg would control the
false-discovery rate instead — the same under no drift, but it needs independence or
positive dependence to hold, and tolerates false flags among true ones. The number of
permutations is raised to 2 x tests / alpha when needed, so the smallest p-value a test
can reach always clears Holm's strictest level.

``baseline_pvalue`` is the raw test people run (two-sample KS for numerics, chi-square for
categories, on the non-missing values, uncorrected), measured side by side in the
benchmark.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from skewless.design_effect import design_effects
from skewless.errors import DataError
from skewless.histograms import (
    CategoricalHistogram, Histogram, Kind, NumericHistogram, as_float, check_comparable, infer_kind,
    summarize, summarize_like,
)
from skewless.settings import MonitoringSettings

CORRECTION = "holm"
_STOP_AFTER = 10  # Besag-Clifford: stop permuting after this many draws at least as extreme
_BATCH = 200
_PSI_BINS = 10
# Outer bins are closed at most this many robust sigmas (or the reference's 0.1-99.9% span) beyond it.
_TAIL_SIGMAS = 6.0


# -- statistics on count vectors (vectorised over leading axes) -----------------------------------

def wasserstein_counts(widths: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Wasserstein-1 between histograms ``a`` and ``b`` (counts, last axis = bins) on bins of
    ``widths``, values uniform within a bin: the exact integral of |F_a - F_b| for the two
    piecewise-linear CDFs."""
    fa = np.cumsum(a, axis=-1) / np.maximum(a.sum(axis=-1, keepdims=True), 1)
    fb = np.cumsum(b, axis=-1) / np.maximum(b.sum(axis=-1, keepdims=True), 1)
    right = fa - fb
    left = np.concatenate([np.zeros(right.shape[:-1] + (1,)), right[..., :-1]], axis=-1)
    al, ar = np.abs(left), np.abs(right)
    both = al + ar
    # Same sign: a trapezoid. Opposite signs: the difference crosses zero inside the bin.
    seg = np.where(left * right >= 0, both / 2, (left * left + right * right) / (2 * np.where(both > 0, both, 1)))
    return (seg * widths).sum(axis=-1)


def js_counts(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Jensen-Shannon distance (base 2, in [0, 1]) between the shares of counts ``a`` and ``b``."""
    p = a / np.maximum(a.sum(axis=-1, keepdims=True), 1)
    q = b / np.maximum(b.sum(axis=-1, keepdims=True), 1)
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        tp = np.where(p > 0, p * np.log2(p / m), 0.0)
        tq = np.where(q > 0, q * np.log2(q / m), 0.0)
    return np.sqrt(np.clip(0.5 * (tp.sum(axis=-1) + tq.sum(axis=-1)), 0.0, 1.0))


def psi_counts(a: np.ndarray, b: np.ndarray) -> float:
    """Population stability index of ``b`` against ``a`` (half a count added to every bin, so
    an empty bin gives a large but finite figure)."""
    a = np.asarray(a, dtype=np.float64) + 0.5
    b = np.asarray(b, dtype=np.float64) + 0.5
    p, q = a / a.sum(), b / b.sum()
    return float(np.sum((q - p) * np.log(q / p)))


def numeric_widths(reference: NumericHistogram, live: NumericHistogram) -> np.ndarray:
    """Bin widths shared by both histograms: the outer bins closed at the pooled minimum and
    maximum, but no farther than the reference's 0.1-99.9% span (or 6 robust sigmas) beyond
    its outer edges."""
    e = reference.edges
    cap = max(float(e[-1] - e[0]), _TAIL_SIGMAS * reference.scale())
    lo = np.fmin(reference.lo, live.lo)
    hi = np.fmax(reference.hi, live.hi)
    lo = e[0] if math.isnan(lo) else max(min(lo, e[0]), e[0] - cap)
    hi = e[-1] if math.isnan(hi) else min(max(hi, e[-1]), e[-1] + cap)
    return np.diff(np.concatenate([[lo], e, [hi]]))


def normalised_wasserstein(reference: NumericHistogram, live: NumericHistogram) -> float:
    """W1 between the non-missing values, over the reference's robust sigma."""
    check_comparable(reference, live, "values")
    w = numeric_widths(reference, live)
    return float(wasserstein_counts(w, reference.counts, live.counts)) / reference.scale()


def category_counts(reference: CategoricalHistogram, live: CategoricalHistogram) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Both histograms on one list of categories: the reference's, then the live sample's new
    ones, then ``other`` when either has it."""
    keys = list(reference.counts) + [k for k in live.counts if k not in reference.counts]
    a = [reference.counts.get(k, 0) for k in keys]
    b = [live.counts.get(k, 0) for k in keys]
    if reference.other or live.other:
        keys.append("__other__")
        a.append(reference.other)
        b.append(live.other)
    return keys, np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)


def js_distance(reference: CategoricalHistogram, live: CategoricalHistogram) -> float:
    _, a, b = category_counts(reference, live)
    return float(js_counts(a, b))


def decile_groups(reference_counts: np.ndarray, groups: int = _PSI_BINS) -> np.ndarray:
    """For each bin, the group of ~1/groups of the reference it falls in (by reference mass
    to its left): fine quantile bins regrouped into deciles for PSI."""
    n = max(int(reference_counts.sum()), 1)
    left = (np.cumsum(reference_counts) - reference_counts) / n
    return np.minimum((left * groups + 1e-9).astype(np.int64), groups - 1)


def regroup(counts: np.ndarray, groups: np.ndarray) -> np.ndarray:
    return np.bincount(groups, weights=counts, minlength=int(groups.max()) + 1)


# -- calibration ----------------------------------------------------------------------------------

def permutation_pvalue(stat: Callable[[np.ndarray, np.ndarray], np.ndarray], a: np.ndarray, b: np.ndarray,
                       observed: float, permutations: int, rng: np.random.Generator,
                       inflation: float = 1.0) -> tuple[float, int]:
    """P-value of ``observed = stat(a, b)`` under exchangeability of the pooled rows: ``b`` is
    redrawn as a multivariate-hypergeometric subset of ``a + b``. Stops at the 10th draw at
    least as extreme (Besag-Clifford p = 10 / draws); otherwise (count + 1) / (draws + 1).
    Returns (p, draws).

    ``inflation`` (>= 1, see ``variance_inflation``): the rows come in clusters, and the
    difference between the two samples' shares varies ``inflation`` times more than between
    independent rows. The statistics here are (W1 exactly, JS locally) homogeneous of degree
    one in that difference, so a draw scaled to the clustered spread exceeds ``observed``
    exactly when the unscaled draw exceeds ``observed / sqrt(inflation)``."""
    pooled = (a + b).astype(np.int64)
    n_b = int(b.sum())
    observed = observed / math.sqrt(max(inflation, 1.0))
    tol = 1e-9 * max(abs(observed), 1e-300)
    hits = 0
    drawn = 0
    while drawn < permutations:
        size = min(_BATCH, permutations - drawn)
        nb = rng.multivariate_hypergeometric(pooled, n_b, size=size, method="marginals")
        exceed = stat(pooled - nb, nb) >= observed - tol
        cum = hits + np.cumsum(exceed)
        if cum[-1] >= _STOP_AFTER:
            stopped_at = drawn + int(np.argmax(cum >= _STOP_AFTER)) + 1
            return _STOP_AFTER / stopped_at, stopped_at
        hits = int(cum[-1])
        drawn += size
    return (hits + 1) / (drawn + 1), drawn


def missing_pvalue(missing_a: int, n_a: int, missing_b: int, n_b: int, inflation: float = 1.0) -> float:
    """Exact two-sided test of equal missing rates (hypergeometric, as Fisher's): the
    probability, given the pooled missing count, of a rate difference at least as large.

    The difference is linear in the live sample's missing count x, so "at least as large" is
    two tails, x <= x_lo and x >= x_hi: the p-value is the hypergeometric CDF at x_lo plus its
    survival function above x_hi - 1 — the same figure as summing the probability of every
    such x, at a cost that does not grow with n. ``inflation`` (clustered rows, see
    ``variance_inflation``) compares ``observed / sqrt(inflation)`` instead."""
    from scipy.stats import hypergeom

    if n_a <= 0 or n_b <= 0:
        return 1.0
    total, k = n_a + n_b, missing_a + missing_b
    observed = abs(missing_b / n_b - missing_a / n_a) / math.sqrt(max(inflation, 1.0)) - 1e-12
    if observed <= 0:
        return 1.0
    x_min, x_max = max(0, n_b - (total - k)), min(k, n_b)

    def diff(x: int) -> float:
        return abs(x / n_b - (k - x) / n_a)

    slope = 1 / n_b + 1 / n_a  # diff(x) = |slope * x - k / n_a|: a V with its vertex at x = k / n_a / slope
    vertex = k / n_a / slope
    x_lo = math.floor(vertex - observed / slope)
    x_hi = math.ceil(vertex + observed / slope)
    # Settle each edge on the very expression of the definition (floating point at a boundary).
    while x_lo + 1 < vertex and diff(x_lo + 1) >= observed:
        x_lo += 1
    while x_lo >= x_min and diff(x_lo) < observed:
        x_lo -= 1
    while x_hi - 1 > vertex and diff(x_hi - 1) >= observed:
        x_hi -= 1
    while x_hi <= x_max and diff(x_hi) < observed:
        x_hi += 1
    p = 0.0
    if x_lo >= x_min:
        p += float(hypergeom.cdf(x_lo, total, k, n_b))
    if x_hi <= x_max:
        p += float(hypergeom.sf(x_hi - 1, total, k, n_b))
    return min(1.0, p)


def variance_inflation(effect_a: float, n_a: int, effect_b: float, n_b: int) -> float:
    """How many times more the difference of two samples' shares varies when sample a's rows
    have design effect ``effect_a`` and b's ``effect_b`` (``skewless.design_effect``) than
    between independent rows: (effect_a / n_a + effect_b / n_b) / (1 / n_a + 1 / n_b)."""
    if n_a <= 0 or n_b <= 0:
        return 1.0
    return max(1.0, (effect_a / n_a + effect_b / n_b) / (1 / n_a + 1 / n_b))


def holm(pvalues: list[float | None]) -> list[float]:
    """Holm's step-down adjusted p-values (``None``, an untested signal, counts as 1)."""
    p = np.array([1.0 if v is None else v for v in pvalues], dtype=np.float64)
    m = len(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(np.argsort(p, kind="stable")):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


# -- results --------------------------------------------------------------------------------------

@dataclass
class Signal:
    """One drift signal of one feature."""

    signal: str  # "distribution" | "missing"
    statistic: str  # "wasserstein_norm" | "js_distance" | "missing_rate_diff"
    value: float | None  # None: not measurable (no values on one side)
    threshold: float
    p_value: float | None = None  # None: not tested (below its threshold, or not measurable)
    inflation: float = 1.0  # the p-value's allowance for clustered rows (``variance_inflation``; 1: independent)
    permutations: int = 0
    p_adjusted: float | None = None
    drifted: bool = False
    note: str | None = None

    @property
    def material(self) -> bool:
        return self.value is not None and abs(self.value) >= self.threshold


@dataclass
class FeatureDrift:
    name: str
    kind: Kind
    n_reference: int
    n_live: int
    missing_rate_reference: float
    missing_rate_live: float
    signals: list[Signal]
    psi: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def drifted(self) -> bool:
        return any(s.drifted for s in self.signals)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["drifted"] = self.drifted
        return _clean(d)


@dataclass
class DriftReport:
    features: list[FeatureDrift]
    alpha: float
    tests: int
    permutations: int
    correction: str = CORRECTION

    @property
    def drifted(self) -> bool:
        return any(f.drifted for f in self.features)

    @property
    def drifted_features(self) -> list[str]:
        return [f.name for f in self.features if f.drifted]

    def feature(self, name: str) -> FeatureDrift:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"drifted": self.drifted, "drifted_features": self.drifted_features, "alpha": self.alpha,
                "correction": self.correction, "tests": self.tests, "permutations": self.permutations,
                "features": [f.to_dict() for f in self.features]}


# -- measuring and deciding -----------------------------------------------------------------------

def _measure(name: str, ref: Histogram, live: Histogram, threshold: float, missing_threshold: float) -> FeatureDrift:
    """The statistics of one feature (no p-values yet)."""
    check_comparable(ref, live, name)
    signals: list[Signal] = []
    details: dict[str, Any] = {}
    psi = None
    if isinstance(ref, NumericHistogram):
        assert isinstance(live, NumericHistogram)
        dist = Signal("distribution", "wasserstein_norm", None, threshold)
        if ref.n_values and live.n_values:
            dist.value = normalised_wasserstein(ref, live)
            groups = decile_groups(ref.counts)
            a, b = regroup(ref.counts, groups), regroup(live.counts, groups)
            psi = psi_counts(a, b)
            details["js_binned"] = float(js_counts(a, b))
        else:
            dist.note = "no values in the " + ("reference" if not ref.n_values else "live sample")
        details.update(mean_reference=ref.mean, mean_live=live.mean, std_reference=ref.std, std_live=live.std,
                       scale_reference=ref.scale())
    else:
        assert isinstance(ref, CategoricalHistogram) and isinstance(live, CategoricalHistogram)
        dist = Signal("distribution", "js_distance", None, threshold)
        if ref.n_values and live.n_values:
            keys, a, b = category_counts(ref, live)
            dist.value = float(js_counts(a, b))
            psi = psi_counts(a, b)
            sa, sb = a / a.sum(), b / b.sum()
            new = [(k, float(sb[i])) for i, k in enumerate(keys) if k not in ref.counts and k != "__other__"]
            details["new_categories"] = [k for k, _ in sorted(new, key=lambda t: -t[1])[:10]]
            details["new_categories_share"] = float(sum(s for _, s in new))
            order = np.argsort(-np.abs(sb - sa))[:5]
            details["largest_share_changes"] = {keys[i]: float(sb[i] - sa[i]) for i in order}
        else:
            dist.note = "no values in the " + ("reference" if not ref.n_values else "live sample")
    signals.append(dist)
    miss = Signal("missing", "missing_rate_diff", None, missing_threshold)
    if ref.n and live.n:
        miss.value = live.missing_rate - ref.missing_rate
    else:
        miss.note = "no rows in the " + ("reference" if not ref.n else "live sample")
    signals.append(miss)
    return FeatureDrift(name=name, kind=ref.kind, n_reference=ref.n, n_live=live.n,
                        missing_rate_reference=ref.missing_rate, missing_rate_live=live.missing_rate,
                        signals=signals, psi=psi, details=details)


def _pvalue(ref: Histogram, live: Histogram, signal: Signal, permutations: int,
            rng: np.random.Generator) -> tuple[float, int]:
    assert signal.value is not None
    c = signal.inflation
    if signal.signal == "missing":
        return missing_pvalue(ref.missing, ref.n, live.missing, live.n, c), 0
    if isinstance(ref, NumericHistogram):
        assert isinstance(live, NumericHistogram)
        widths = numeric_widths(ref, live)
        a, b = ref.counts, live.counts
        observed = float(wasserstein_counts(widths, a, b))  # unnormalised: p-values do not depend on the scale
        return permutation_pvalue(lambda x, y: wasserstein_counts(widths, x, y), a, b, observed, permutations, rng, c)
    assert isinstance(ref, CategoricalHistogram) and isinstance(live, CategoricalHistogram)
    _, a, b = category_counts(ref, live)
    keep = (a + b) > 0
    a, b = a[keep], b[keep]
    return permutation_pvalue(js_counts, a, b, float(js_counts(a, b)), permutations, rng, c)


Effects = Mapping[str, Mapping[str, float]]  # feature -> signal -> design effect


def detect(reference: Mapping[str, Histogram], live: Mapping[str, Histogram],
           settings: MonitoringSettings, reference_effects: Effects | None = None,
           live_effects: Effects | None = None) -> DriftReport:
    """Drift of every reference feature (except those ``ignore``-d in settings) in ``live``.

    ``reference_effects`` / ``live_effects``: each sample's design effects per feature and
    signal (``skewless.design_effect.design_effects``: rows of one card within one block of
    time are one cluster). A signal's p-value then allows for the clustered spread
    (``variance_inflation``). A side without its own figure takes the other side's — under
    the null hypothesis both samples come from one process, dependence included; with
    neither, rows are independent (effect 1)."""
    names = [n for n in reference if not (n in settings.features and settings.features[n].ignore)]
    absent = [n for n in names if n not in live]
    if absent:
        raise DataError(f"the live sample has no feature{'s' * (len(absent) > 1)} {', '.join(absent)}",
                        "the reference and live samples must hold the same features")
    features = []
    for name in names:
        threshold, missing_threshold = settings.for_feature(name, reference[name].kind)
        features.append(_measure(name, reference[name], live[name], threshold, missing_threshold))

    tests = [(f, i, s) for f in features for i, s in enumerate(f.signals) if s.value is not None]
    permutations = max(settings.permutations, math.ceil(2 * len(tests) / settings.alpha))
    for f, i, s in tests:
        s.inflation = _inflation(reference[f.name], live[f.name], s.signal, reference_effects, live_effects, f.name)
        if not s.material:
            s.note = s.note or "below its threshold: not tested"
            continue
        rng = np.random.default_rng([settings.seed, zlib.crc32(f.name.encode()), i])
        s.p_value, s.permutations = _pvalue(reference[f.name], live[f.name], s, permutations, rng)
    for (_, _, s), adj in zip(tests, holm([s.p_value for _, _, s in tests])):
        s.p_adjusted = adj
        s.drifted = s.material and adj <= settings.alpha
    return DriftReport(features=features, alpha=settings.alpha, tests=len(tests), permutations=permutations)


def _inflation(ref: Histogram, live: Histogram, signal: str, reference_effects: Effects | None,
               live_effects: Effects | None, name: str) -> float:
    def effect(effects: Effects | None) -> float | None:
        value = (effects or {}).get(name, {}).get(signal)
        return None if value is None or not math.isfinite(value) else max(float(value), 1.0)

    e_ref, e_live = effect(reference_effects), effect(live_effects)
    e_ref = e_ref if e_ref is not None else e_live
    e_live = e_live if e_live is not None else e_ref
    if e_ref is None or e_live is None:
        return 1.0
    n_ref, n_live = (ref.n, live.n) if signal == "missing" else (ref.n_values, live.n_values)
    return round(variance_inflation(e_ref, n_ref, e_live, n_live), 4)


def kinds_from(settings: MonitoringSettings, columns: Mapping[str, Any]) -> dict[str, Kind]:
    """Each column's kind: the settings' when declared, else inferred."""
    names = columns.columns if hasattr(columns, "columns") else columns.keys()
    out: dict[str, Kind] = {}
    for name in names:
        own = settings.features.get(str(name))
        out[str(name)] = own.kind if own is not None and own.kind else infer_kind(columns[name])
    return out


def reference_histograms(columns: Mapping[str, Any], settings: MonitoringSettings) -> dict[str, Histogram]:
    """Reference histograms of a DataFrame (or mapping of name -> values), per the settings."""
    kept = {str(n): columns[n] for n in (columns.columns if hasattr(columns, "columns") else columns.keys())
            if not (str(n) in settings.features and settings.features[str(n)].ignore)}
    return summarize(kept, kinds_from(settings, kept), settings.bins, settings.max_categories)


def detect_samples(reference: Mapping[str, Any], live: Mapping[str, Any], settings: MonitoringSettings,
                   reference_clusters: Any = None, live_clusters: Any = None) -> DriftReport:
    """``detect`` on raw samples (DataFrames or mappings of name -> values), via histograms;
    with each row's cluster id (``skewless.design_effect.cluster_ids``) the p-values allow for
    the dependence within clusters."""
    ref = reference_histograms(reference, settings)
    ref_effects = None if reference_clusters is None else design_effects(ref, reference, reference_clusters)
    live_effects = None if live_clusters is None else design_effects(ref, live, live_clusters)
    return detect(ref, summarize_like(ref, live, settings.max_categories), settings, ref_effects, live_effects)


# -- the raw baseline -----------------------------------------------------------------------------

def baseline_pvalue(reference: Any, live: Any, kind: Kind) -> float:
    """The raw test as commonly run (Evidently's choice for small samples): two-sample KS on
    the non-missing numeric values, chi-square on the category counts; NaN when a side has no
    values. Missing values are dropped, so a column turning null is invisible to it."""
    from scipy import stats

    if kind == "numeric":
        a, b = as_float(reference), as_float(live)
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        if not len(a) or not len(b):
            return math.nan
        return float(stats.ks_2samp(a, b).pvalue)
    ref = CategoricalHistogram.reference(reference, max_categories=10**9)
    _, a, b = category_counts(ref, ref.bin(live, max_new=10**9))
    keep = (a + b) > 0
    if not a.sum() or not b.sum():
        return math.nan
    if keep.sum() < 2:
        return 1.0
    return float(stats.chi2_contingency(np.vstack([a[keep], b[keep]]), correction=False).pvalue)


def _clean(obj: Any) -> Any:
    """JSON-ready: NaN -> None, numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if math.isnan(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
