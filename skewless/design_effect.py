"""Design effects: how much less a sample of dependent rows tells than as many independent
ones, per drift signal — what lets drift p-values respect fraud bursts and regular customers.

Rows are not independent: fraud comes in bursts of several large payments on one card within
minutes, and a customer's payments look alike. Rows of one *cluster* — one card (the entity
key, ``user_id``) within one *block* of time (``monitoring.cluster_block``, 24h: the live
window) — travel together: a burst lands wholly in the reference or wholly in the live
window, never split between them as a row-by-row permutation assumes. A statistic's spread
over the windows a process can produce is then wider than over independently drawn rows.

The **design effect** of a signal (Kish; Rao and Scott's generalised form for a vector of
shares) measures by how much: for a row's map phi(x) into the signal's metric,

    deff = sum over clusters |sum_{i in c} (phi(x_i) - mean)|^2  /  sum over rows |phi(x_i) - mean|^2

— 1 for independent rows (or clusters of one), up to the cluster size when a cluster's rows
are identical. The maps, one per signal:

* numeric distribution: the cumulative indicators 1{x <= e_k} at each bin edge, weighted by
  the bin's width: the L2 analogue of the Wasserstein-1 distance (the integral of |F_a - F_b|);
* categorical distribution: the category indicators over sqrt(share): Rao and Scott's mean
  generalised design effect of the chi-square (which the Jensen-Shannon distance follows
  locally);
* missing: the missing indicator.

Estimates below 1 (clusters more varied than the rows: noise, mostly) count as 1: the check
never claims more information than its rows hold. The estimate needs many clusters: with a
single one (every row on one card) the sum over clusters is 0, nothing can be told, and the
effect counts as 1. Everything works on the histogram's bins,
so the same code gives the reference's effects (``skewless train``, with the training set's
entity and time) and the live sample's (``skewless monitor drift``, from the prediction log).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd

from skewless.features.dsl import parse_duration
from skewless.histograms import CategoricalHistogram, Histogram, NumericHistogram, as_float, category_label

_CHUNK = 20_000  # clusters per dense (clusters x bins) block


def cluster_ids(keys: Any, times: Any, block: timedelta | str | None) -> np.ndarray:
    """One integer per row naming its cluster: its entity ``keys`` within one ``block`` of
    ``times`` (blocks aligned on the epoch; ``None``: the entity over the whole sample).
    A missing key makes a cluster of its own row."""
    keys = pd.Series(np.asarray(keys, dtype=object)).reset_index(drop=True)
    parts: list[Any] = [keys.astype(str)]
    if block is not None:
        t = pd.to_datetime(pd.Series(np.asarray(times)).reset_index(drop=True), utc=True)
        width = pd.Timedelta(parse_duration(block) if isinstance(block, str) else block)
        parts.append((t - pd.Timestamp(0, tz="UTC")) // width)  # whatever the timestamps' resolution
    ids = pd.MultiIndex.from_arrays(parts).factorize()[0] if len(parts) > 1 else pd.factorize(parts[0])[0]
    ids = np.asarray(ids, dtype=np.int64)
    lone = keys.isna().to_numpy()
    if lone.any():
        ids[lone] = ids.max(initial=-1) + 1 + np.arange(int(lone.sum()))
    return ids


def design_effect(codes: np.ndarray, clusters: np.ndarray, weights: np.ndarray, cumulative: bool) -> float:
    """The design effect of rows in bins ``codes`` (-1: left out) grouped by ``clusters``, for
    the map of a row to its bin's indicator (``cumulative``: to the indicators of every bin
    from its own up, i.e. 1{x <= right edge}) weighted by ``weights`` per bin."""
    keep = codes >= 0
    codes, clusters = codes[keep], clusters[keep]
    n, bins = len(codes), len(weights)
    if n < 2:
        return 1.0
    counts = np.bincount(codes, minlength=bins).astype(np.float64)
    share = counts / n
    level = np.cumsum(share) if cumulative else share
    total = n * float(np.sum(weights * level * (1 - level)))  # sum over rows of |phi - mean|^2
    if total <= 0:
        return 1.0
    # Clusters of one row contribute what they would as independent rows: only larger ones change the sum.
    _, cl, sizes = np.unique(clusters, return_inverse=True, return_counts=True)
    multi = sizes[cl] > 1
    extra = 0.0
    if multi.any():
        ids, cl_multi = np.unique(cl[multi], return_inverse=True)
        codes_multi = codes[multi]
        row_terms = _row_terms(codes_multi, weights, level, cumulative)  # |phi_i - mean|^2 of each row
        cluster_terms = 0.0
        for lo in range(0, len(ids), _CHUNK):
            sel = (cl_multi >= lo) & (cl_multi < lo + _CHUNK)
            m = min(_CHUNK, len(ids) - lo)
            h = np.zeros((m, bins))
            np.add.at(h, (cl_multi[sel] - lo, codes_multi[sel]), 1.0)
            size = h.sum(axis=1, keepdims=True)
            c = np.cumsum(h, axis=1) if cumulative else h
            cluster_terms += float(np.sum(weights * (c - size * level) ** 2))
        extra = cluster_terms - row_terms
    return max(1.0, (total + extra) / total)


def _row_terms(codes: np.ndarray, weights: np.ndarray, level: np.ndarray, cumulative: bool) -> float:
    """sum over the rows of |phi(x_i) - mean|^2."""
    if cumulative:
        # Row in bin b: indicator 1 for bins k >= b, 0 below.
        above = np.cumsum((weights * (1 - level) ** 2)[::-1])[::-1]  # sum_{k >= b} w (1 - F)^2
        below = np.concatenate([[0.0], np.cumsum(weights * level ** 2)[:-1]])  # sum_{k < b} w F^2
        per_bin = above + below
    else:
        base = float(np.sum(weights * level ** 2))
        per_bin = base - weights * level ** 2 + weights * (1 - level) ** 2
    return float(np.sum(per_bin[codes]))


def numeric_codes(reference: NumericHistogram, values: Any) -> tuple[np.ndarray, np.ndarray]:
    """Each value's bin on ``reference``'s edges (-1: missing) and whether it is missing."""
    x = as_float(values)
    missing = ~np.isfinite(x)
    codes = np.searchsorted(reference.edges, np.where(missing, 0.0, x), side="right")  # bins are [e_i-1, e_i)
    return np.where(missing, -1, codes), missing


def categorical_codes(reference: CategoricalHistogram, values: Any) -> tuple[np.ndarray, np.ndarray]:
    """Each value's category index (the reference's categories, then new ones; -1: missing)."""
    raw, uniques = pd.factorize(pd.Series(np.asarray(values, dtype=object)), use_na_sentinel=True)
    index = {k: i for i, k in enumerate(reference.counts)}
    of_unique = np.array([index.setdefault(category_label(u), len(index)) for u in uniques] + [-1], dtype=np.int64)
    codes = of_unique[raw]  # -1 (missing) picks the appended -1
    return codes, raw < 0


def design_effects(histograms: Mapping[str, Histogram], columns: Mapping[str, Any],
                   clusters: np.ndarray) -> dict[str, dict[str, float]]:
    """Per feature of ``histograms`` (binned on them), the design effect of each signal,
    ``{"distribution": d, "missing": m}``, of ``columns`` grouped by ``clusters``."""
    clusters = np.asarray(clusters)
    out: dict[str, dict[str, float]] = {}
    for name, hist in histograms.items():
        values = columns[name]
        if len(values) != len(clusters):
            raise ValueError(f"{name}: {len(values)} values for {len(clusters)} cluster ids")
        if isinstance(hist, NumericHistogram):
            codes, missing = numeric_codes(hist, values)
            bins = len(hist.edges) + 1
            # F at the right edge of bin k counts for half of each bin it bounds (the trapezoid
            # rule of the Wasserstein integral); the last one is always 1 and counts for nothing.
            widths = np.diff(hist.knots())
            weights = np.append((widths[:-1] + widths[1:]) / 2, 0.0)
            dist = design_effect(codes, clusters, weights, cumulative=True)
        else:
            codes, missing = categorical_codes(hist, values)
            present = codes[codes >= 0]
            bins = int(present.max()) + 1 if len(present) else 1
            share = np.bincount(present, minlength=bins) / max(len(present), 1)
            weights = np.where(share > 0, 1.0 / np.where(share > 0, share, 1.0), 0.0)
            dist = design_effect(codes, clusters, weights, cumulative=False)
        miss = design_effect(missing.astype(np.int64), clusters, np.array([0.0, 1.0]), cumulative=False)
        out[name] = {"distribution": round(dist, 4), "missing": round(miss, 4)}
    return out
