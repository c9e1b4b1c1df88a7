"""Drift detection: power and false-positive rate, per feature and per dataset, of
``monitoring.drift`` against the raw two-sample tests (KS / chi-square at p < 0.05) and
against fixed thresholds on the same statistics, in the same run, on the same samples.

Data: five synthetic features like the fraud model's — ``amount_log`` (normal: the shift
target), ``amount`` (lognormal), ``tx_count_24h`` (Poisson, many ties), ``country`` (five
categories, shares 40/25/15/12/8%), ``device_age_days`` (normal, 2% missing). For each
sample size n (``size/100``, ``size/10``, ``size``; 500, 5,000 and 50,000 by default) and
each scenario, ``trials`` independent pairs (a reference of n rows, a live sample of n rows)
are drawn and every detector judges the same pair:

* ``none`` — no shift (every flag is a false positive);
* ``bursts`` — no shift either, but rows are dependent, as fraud makes them: 3% of the rows
  (in both samples) are bursts of 3-8 large ``amount``s on one card (a burst's amounts within
  10% of each other, around 10 robust sigmas up). Every flag is a false positive;
* ``mean_0.25`` / ``mean_0.5`` — ``amount_log`` shifted by 0.25 / 0.5 sigma;
* ``variance_1.5`` — ``amount_log``'s variance x1.5 (same mean);
* ``category_5pt`` — 5 points of ``country`` share move from the first category to the second;
* ``missing_5pt`` — ``device_age_days`` missing 7% of the time instead of 2%;
* ``negligible_0.05`` — ``amount_log`` shifted by 0.05 sigma: below the 0.1 sigma worth acting
  on (``monitoring.thresholds.numeric``), so a detector that "behaves at large n" stays quiet
  — the raw test flags it more and more as n grows.

Every row belongs to a card (a cluster: the other rows spread over n/3 cards at random, so
outside bursts rows are independent).

Detectors (a dataset is flagged when any feature is):

* ``ours`` — ``monitoring.drift.detect`` with the settings' ``monitoring`` section: material
  (W1/sigma, JS, missing-rate thresholds) and significant (histogram permutation p-values,
  Holm at alpha), p-values allowing for each sample's design effects measured on the cards;
* ``rows`` — the same, rows taken as independent (the method before design effects);
* ``ks`` — the baseline: KS (numerics) / chi-square (categories) on the non-missing values,
  p < 0.05 per feature, uncorrected;
* ``fixed`` — our statistics against fixed thresholds, W1/sigma >= 0.1 and JS >= 0.1
  (Evidently's large-sample rule), without calibration or missing-rate signal.

Targets (issue 12), checked at every n: power >= 0.9 on the 0.5 sigma shift (the target
feature and the dataset), false positives <= 5% (the worst feature, and the dataset, on
``none``), stable as n grows (those hold at every n, and the negligible shift is not
flagged more at the largest n than at the smallest); and false positives <= 5% on
``bursts`` too. Rates are over ``trials`` trials (200: a 5% rate is known to about +-3
points; 50: +-6).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from monitoring.drift import baseline_pvalue, detect, js_counts, normalised_wasserstein, category_counts
from skewless.design_effect import design_effects
from skewless.histograms import CategoricalHistogram, NumericHistogram, summarize, summarize_like
from skewless.settings import Settings

FEATURES = ("amount_log", "amount", "tx_count_24h", "country", "device_age_days")
KINDS = {"amount_log": "numeric", "amount": "numeric", "tx_count_24h": "numeric", "country": "categorical",
         "device_age_days": "numeric"}
COUNTRIES = np.array(["FR", "DE", "ES", "IT", "NL"])
SHARES = np.array([0.40, 0.25, 0.15, 0.12, 0.08])
SHARES_SHIFTED = np.array([0.35, 0.30, 0.15, 0.12, 0.08])
BASE_MISSING = 0.02

# scenario -> (target feature or None, description)
SCENARIOS: dict[str, tuple[str | None, str]] = {
    "none": (None, "no shift"),
    "mean_0.25": ("amount_log", "mean +0.25 sigma"),
    "mean_0.5": ("amount_log", "mean +0.5 sigma"),
    "variance_1.5": ("amount_log", "variance x1.5"),
    "category_5pt": ("country", "5-point share shift"),
    "missing_5pt": ("device_age_days", "missing 2% -> 7%"),
    "negligible_0.05": ("amount_log", "mean +0.05 sigma (below the threshold)"),
    "bursts": (None, "no shift, bursty amounts"),  # last: the others keep their seeds (and samples)
}
DETECTORS = ("ours", "rows", "ks", "fixed")
NO_SHIFT = ("none", "bursts")
BURST_SHARE = 0.03
FIXED_THRESHOLD = 0.1
BASELINE_ALPHA = 0.05


def sample(rng: np.random.Generator, n: int, scenario: str = "none",
           cards_rng: np.random.Generator | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """n rows of the five features and each row's card; ``scenario`` shifts the live
    sample's target (``bursts``: both samples are bursty). Cards and bursts come from
    ``cards_rng``, so the features' values are the same as without them."""
    x = rng.normal(0.0, 1.0, n)
    if scenario == "mean_0.25":
        x += 0.25
    elif scenario == "mean_0.5":
        x += 0.5
    elif scenario == "negligible_0.05":
        x += 0.05
    elif scenario == "variance_1.5":
        x *= math.sqrt(1.5)
    shares = SHARES_SHIFTED if scenario == "category_5pt" else SHARES
    age = rng.normal(100.0, 30.0, n)
    age[rng.random(n) < (BASE_MISSING + 0.05 if scenario == "missing_5pt" else BASE_MISSING)] = np.nan
    out = {
        "amount_log": x,
        "amount": rng.lognormal(3.0, 1.0, n),
        "tx_count_24h": rng.poisson(3.0, n).astype(np.float64),
        "country": COUNTRIES[rng.choice(len(COUNTRIES), size=n, p=shares)],
        "device_age_days": age,
    }
    crng = cards_rng if cards_rng is not None else rng
    cards = crng.integers(0, max(1, n // 3), n)
    if scenario == "bursts":
        sizes = crng.integers(3, 9, max(1, int(crng.poisson(BURST_SHARE * n / 5.5))))
        sizes = sizes[np.cumsum(sizes) <= n]
        k = int(sizes.sum())
        out["amount"][:k] = np.repeat(crng.lognormal(5.5, 0.5, len(sizes)), sizes) * crng.uniform(0.9, 1.1, k)
        cards[:k] = n + np.repeat(np.arange(len(sizes)), sizes)  # a burst: one card of its own
    return out, cards


def _flags(settings: Settings, reference: dict[str, np.ndarray], live: dict[str, np.ndarray],
           reference_cards: np.ndarray, live_cards: np.ndarray) -> dict[str, set[str]]:
    """The features each detector flags on one (reference, live) pair."""
    mon = settings.monitoring
    ref_h = summarize(reference, KINDS, mon.bins, mon.max_categories)
    live_h = summarize_like(ref_h, live, mon.max_categories)
    effects = design_effects(ref_h, reference, reference_cards), design_effects(ref_h, live, live_cards)
    ours = set(detect(ref_h, live_h, mon, *effects).drifted_features)
    rows = set(detect(ref_h, live_h, mon).drifted_features)
    ks = {f for f in FEATURES if baseline_pvalue(reference[f], live[f], KINDS[f]) < BASELINE_ALPHA}
    fixed = set()
    for f in FEATURES:
        r, l_ = ref_h[f], live_h[f]
        if isinstance(r, NumericHistogram):
            value = normalised_wasserstein(r, l_)  # type: ignore[arg-type]
        else:
            assert isinstance(r, CategoricalHistogram) and isinstance(l_, CategoricalHistogram)
            _, a, b = category_counts(r, l_)
            value = float(js_counts(a, b))
        if value >= FIXED_THRESHOLD:
            fixed.add(f)
    return {"ours": ours, "rows": rows, "ks": ks, "fixed": fixed}


def _rate(k: int, trials: int) -> float:
    return round(k / trials, 3)


def run(settings: Settings, size: int = 50_000, trials: int = 200, seed: int = 12,
        progress: Callable[[str], None] | None = None, **_: Any) -> dict[str, Any]:
    sizes = sorted({max(100, size // 100), max(100, size // 10), size})
    t0 = time.perf_counter()
    # counts[detector][n][scenario] = (per-feature flag counts, dataset flag count)
    counts = {d: {n: {s: ({f: 0 for f in FEATURES}, [0]) for s in SCENARIOS} for n in sizes} for d in DETECTORS}
    for si, n in enumerate(sizes):
        for ci, scenario in enumerate(SCENARIOS):
            for t in range(trials):
                if progress is not None and t % 10 == 0:
                    progress(f"n={n:,} {scenario}: trial {t + 1}/{trials}")
                rng = np.random.default_rng([seed, si, ci, t])
                crng = np.random.default_rng([seed, si, ci, t, 1])  # cards: the values stay those of earlier runs
                (ref, ref_cards), (live, live_cards) = (
                    sample(rng, n, "bursts" if scenario == "bursts" else "none", crng), sample(rng, n, scenario, crng))
                flags = _flags(settings, ref, live, ref_cards, live_cards)
                for d, flagged in flags.items():
                    per, ds = counts[d][n][scenario]
                    for f in flagged:
                        per[f] += 1
                    ds[0] += bool(flagged)

    figures: dict[str, Any] = {d: {} for d in DETECTORS}
    for d in DETECTORS:
        for n in sizes:
            row: dict[str, Any] = {}
            per, ds = counts[d][n]["none"]
            row["fp_feature_max"] = max(_rate(v, trials) for v in per.values())
            row["fp_feature"] = {f: _rate(v, trials) for f, v in per.items()}
            row["fp_dataset"] = _rate(ds[0], trials)
            per, ds = counts[d][n]["bursts"]
            row["fp_bursts_feature_max"] = max(_rate(v, trials) for v in per.values())
            row["fp_bursts_feature"] = {f: _rate(v, trials) for f, v in per.items()}
            row["fp_bursts_dataset"] = _rate(ds[0], trials)
            for scenario, (target, _) in SCENARIOS.items():
                if target is None:
                    continue
                per, ds = counts[d][n][scenario]
                row[f"power_{scenario}"] = _rate(per[target], trials)
                row[f"dataset_{scenario}"] = _rate(ds[0], trials)
                row[f"others_{scenario}"] = max(_rate(v, trials) for f, v in per.items() if f != target)
            figures[d][str(n)] = row

    def targets(d: str) -> dict[str, bool]:
        rows = [figures[d][str(n)] for n in sizes]
        power = all(r["power_mean_0.5"] >= 0.9 and r["dataset_mean_0.5"] >= 0.9 for r in rows)
        fp = all(r["fp_feature_max"] <= 0.05 and r["fp_dataset"] <= 0.05 for r in rows)
        fp_bursts = all(r["fp_bursts_feature_max"] <= 0.05 and r["fp_bursts_dataset"] <= 0.05 for r in rows)
        quiet = rows[-1]["dataset_negligible_0.05"] <= rows[0]["dataset_negligible_0.05"] + 0.05
        return {"power_0.5sigma_ge_0.9": power, "false_positives_le_5pct": fp,
                "false_positives_le_5pct_bursty": fp_bursts, "stable_as_n_grows": power and fp and quiet}

    met = {d: targets(d) for d in DETECTORS}
    false_alarms = {d: sum(counts[d][n]["none"][1][0] for n in sizes) for d in DETECTORS}
    bursty_alarms = {d: sum(counts[d][n]["bursts"][1][0] for n in sizes) for d in DETECTORS}
    mon = settings.monitoring
    return {
        "benchmark": "drift", "trials": trials, "sizes": sizes, "features": len(FEATURES),
        "alpha": mon.alpha, "thresholds": mon.thresholds.model_dump(), "correction": "holm",
        "permutations": mon.permutations,
        "scenarios": {s: d for s, (_, d) in SCENARIOS.items()},
        "ours": figures["ours"], "rows_independent": figures["rows"], "baseline_ks": figures["ks"],
        "fixed_thresholds": figures["fixed"],
        "targets_ours": met["ours"], "targets_rows_independent": met["rows"], "targets_baseline_ks": met["ks"],
        "targets_fixed": met["fixed"],
        "targets_met": all(met["ours"].values()),
        "baseline": f"KS (numeric) / chi-square (categories) per feature at p < {BASELINE_ALPHA}, uncorrected",
        "no_shift_false_alarms": {d: false_alarms[d] for d in DETECTORS},
        "bursty_false_alarms": {d: bursty_alarms[d] for d in DETECTORS},
        # Dataset false alarms on no-shift samples, the baseline's per one of ours (+1 each: ours may be 0).
        "ratio": round((false_alarms["ks"] + 1) / (false_alarms["ours"] + 1), 1),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def table(result: dict[str, Any]):
    """The readable table: per size and scenario, each detector's rate side by side."""
    from rich.console import Group
    from rich.table import Table

    sizes = result["sizes"]
    t = Table(title=f"benchmark drift: {result['trials']} trials per cell, alpha {result['alpha']} (Holm), "
                    f"ours vs ours with rows taken as independent vs raw KS/chi-square vs fixed thresholds")
    t.add_column("scenario")
    t.add_column("figure")
    names = ("ours", "rows", "KS", "fixed")
    for n in sizes:
        for d in names:
            t.add_column(f"{d}\nn={n:,}", justify="right")
    det = (result["ours"], result["rows_independent"], result["baseline_ks"], result["fixed_thresholds"])

    def add(scenario: str, figure: str, key: str) -> None:
        t.add_row(scenario, figure, *[f"{det[i][str(n)][key]:.3f}" for n in sizes for i in range(len(det))])

    add("none", "false pos. (worst feature)", "fp_feature_max")
    add("", "false pos. (dataset)", "fp_dataset")
    add("bursts", "false pos. (worst feature)", "fp_bursts_feature_max")
    add("  bursty amounts", "false pos. (dataset)", "fp_bursts_dataset")
    for scenario, desc in result["scenarios"].items():
        if scenario in NO_SHIFT:
            continue
        figure = "flag rate" if scenario.startswith("negligible") else "power"
        t.add_row(f"{scenario}", f"{figure} (target feature)", *[f"{det[i][str(n)]['power_' + scenario]:.3f}"
                                                                 for n in sizes for i in range(len(det))])
        add(f"  {desc}", "dataset flagged", f"dataset_{scenario}")
        add("", "others flagged (worst)", f"others_{scenario}")
    keys = ("targets_ours", "targets_rows_independent", "targets_baseline_ks", "targets_fixed")
    targets = Table("target", "ours", "rows indep.", "raw KS", "fixed", title="targets (every n)")
    for k in result["targets_ours"]:
        targets.add_row(k, *["met" if result[key][k] else "NOT met" for key in keys])
    return Group(t, targets)
