"""Synthetic report inputs: a prediction log of ``predictions`` rows x ``features`` model
features (and the score), summarised exactly as ``skewless monitor drift`` summarises
real traffic — reference histograms of a training sample, live histograms binned like
them, ``monitoring.drift.detect`` per window — plus dead letters, a served-consistency
result, freshness figures and a champion and challenger. The rows live only in memory
while they are binned; what the report gets is what it gets from a real deployment.

Used by ``skewless bench report`` (the size and time of the page at 1M x 25) and by the
test that opens the page in a browser.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import numpy as np

from monitoring.drift import detect
from monitoring.report import Part, ReportInputs
from skewless.histograms import SCORE, summarize, summarize_like
from skewless.settings import MonitoringSettings

CATEGORICAL_EVERY = 5  # one feature in five is categorical


def feature_names(n: int) -> list[str]:
    out = []
    for i in range(n):
        kind = "cat" if i % CATEGORICAL_EVERY == CATEGORICAL_EVERY - 1 else "num"
        out.append(f"view_{i % 5}__{kind}_{i:02d}")
    return out


def _sample(names: list[str], rows: int, rng: np.random.Generator, shift: float = 0.0) -> dict[str, np.ndarray]:
    """``rows`` rows of every feature; ``shift`` moves the first numeric features and one
    category share (what drift looks like), 0 for none."""
    cols: dict[str, np.ndarray] = {}
    for i, name in enumerate(names):
        if "__cat_" in name:
            k = 4 + 6 * (i % 4)
            p = np.arange(k, 0, -1, dtype=float)
            if shift and i == CATEGORICAL_EVERY - 1:
                p[-1] += shift * p.sum() * 0.2  # a rare category grows
            cols[name] = rng.choice(k, size=rows, p=p / p.sum()).astype(np.int64)
            continue
        shape = i % 4
        if shape == 0:  # amounts: log-normal
            x = rng.lognormal(3.5, 1.1, rows)
        elif shape == 1:  # counts in a window
            x = rng.poisson(3.0, rows).astype(float)
        elif shape == 2:
            x = rng.normal(0.0, 1.0, rows)
        else:
            x = rng.uniform(0.0, 1.0, rows)
        if shift and i < 3:
            x = x + shift * (np.std(x) if shape != 0 else np.std(np.log(x)) * x)
        if i % 7 == 3:  # some columns are sometimes null
            x[rng.random(rows) < 0.02] = np.nan
        cols[name] = x
    return cols


def _score(rows: int, rng: np.random.Generator, shift: float = 0.0) -> np.ndarray:
    return rng.beta(0.4 + shift, 8.0, rows)


def synthetic_inputs(predictions: int = 1_000_000, features: int = 25, windows: int = 24,
                     reference_rows: int = 200_000, seed: int = 0, drift_from: float = 0.6,
                     now: datetime | None = None, settings: MonitoringSettings | None = None,
                     on_step: Callable[[str], None] = lambda _: None) -> ReportInputs:
    """Report inputs for ``predictions`` live rows over ``windows`` hourly windows (a drift
    check each, the drift growing from ``drift_from`` of the way through) and one check over
    them all, the newest."""
    rng = np.random.default_rng(seed)
    mon = settings or MonitoringSettings(permutations=200)
    now = now or datetime(2026, 11, 27, 12, tzinfo=timezone.utc)
    names = feature_names(features)
    kinds = {n: "categorical" for n in names if "__cat_" in n}
    on_step(f"reference: {reference_rows:,} training rows x {features} features")
    ref_cols = _sample(names, reference_rows, rng)
    ref_cols[SCORE] = _score(reference_rows, rng)
    reference = summarize(ref_cols, kinds, mon.bins, mon.max_categories)
    del ref_cols
    per = predictions // windows
    start = now - timedelta(hours=windows)
    checks: list[dict[str, Any]] = []
    total = None
    for w in range(windows):
        rows = per if w < windows - 1 else predictions - per * (windows - 1)
        shift = max(0.0, (w / windows - drift_from) / (1 - drift_from)) * 0.6 if drift_from < 1 else 0.0
        on_step(f"window {w + 1}/{windows}: {rows:,} predictions")
        cols = _sample(names, rows, rng, shift)
        cols[SCORE] = _score(rows, rng, shift * 0.3)
        live = summarize_like(reference, cols, mon.max_categories)
        del cols
        total = live if total is None else {n: total[n].merge(h) for n, h in live.items()}
        lo, hi = start + timedelta(hours=w), start + timedelta(hours=w + 1)
        checks.append(_check(reference, live, mon, lo, hi, rows))
    assert total is not None
    on_step("the check over every window")
    checks.append(_check(reference, total, mon, start, now, predictions))
    live_hists = total
    return ReportInputs(
        generated_at=now,
        drift=Part({"checks": checks, "live": live_hists}),
        reference=Part({"histograms": reference, "meta": {"rows": reference_rows, "run": "synthetic"}}),
        dead_letters=Part(_dead_letters(predictions, rng)),
        table_checks=Part({"file": "etl-synthetic.json", "start": (now - timedelta(days=1)).date().isoformat(),
                           "end": now.date().isoformat(), "views": {
                               f"view_{i}": {"checks": 9, "failed": [] if i else [
                                   {"check": "view_0.mean_amount_1h.min", "count": 3,
                                    "description": "mean_amount_1h >= 0.01 (as amount): rows breaking it"}]}
                               for i in range(5)}}),
        served=Part(_served(names, predictions, now)),
        freshness=Part({"now": now.timestamp(),
                        "stream": Part({"applied_at": now.timestamp() - 4, "lag": 12, "events": predictions,
                                        "batch": 4211, "newest": {f"view_{i}": now.timestamp() - 2 - 3 * i
                                                                  for i in range(5)}}),
                        "watermark": Part({f"view_{i}": {"until": now.timestamp() - 3600 * (i + 1),
                                                         "written_at": now.timestamp() - 600, "keys": 50_000,
                                                         "writer": "materialize"} for i in range(5)}),
                        "etl": Part({"started_at": now.timestamp() - 5400,
                                     "range": [(now - timedelta(days=1)).date().isoformat(),
                                               now.date().isoformat()]})}),
        models=Part([_model("champion", "3", 0.612, 0.955, 18250.0, 41.0, rng),
                     _model("challenger", "4", 0.641, 0.961, 17310.0, 44.0, rng)]),
    )


def _check(reference, live, mon: MonitoringSettings, lo: datetime, hi: datetime, rows: int) -> dict[str, Any]:
    report = detect(reference, live, mon)
    return {"checked_at": hi.isoformat(), "reference_run": "synthetic", "model_version": "synthetic-v3",
            "reference_rows": reference[SCORE].n, "window": {"start": lo.isoformat(), "end": hi.isoformat()},
            "predictions": rows, "other_model_versions": 0, "duplicates_dropped": 0, **report.to_dict()}


def _dead_letters(predictions: int, rng: np.random.Generator) -> dict[str, Any]:
    reasons = {
        "check transactions.amount.in_range": "check transactions.amount.in_range: amount must be in [0.01, 1e+06], got -3.5",
        "check transactions.channel.allowed": "check transactions.channel.allowed: channel must be one of pos, web, app, got 'fax'",
        "not valid JSON": "not valid JSON: unexpected character: line 1 column 1 (char 0)",
        "missing required field 'user_id'": "missing required field 'user_id'",
        "check transactions.event_time.not_ahead": "check transactions.event_time.not_ahead: event time 2h ahead of its Kafka timestamp",
    }
    counts = sorted(rng.integers(1, 400, len(reasons)).tolist(), reverse=True)
    return {"transactions": {"valid": predictions, "dead": sum(counts),
                             "reasons": {g: [n, ex] for (g, ex), n in zip(reasons.items(), counts)}},
            "predictions": {"valid": predictions, "dead": 0, "reasons": {}}}


def _served(names: list[str], predictions: int, now: datetime) -> dict[str, Any]:
    feats = {n: {"compared": predictions, "matches": predictions - (7 if i == 1 else 0),
                 "mismatches": 7 if i == 1 else 0, "missing": 0, "extra": 0, "smape_pct": 0.4 if i == 1 else 0.0}
             for i, n in enumerate(names)}
    totals = {k: sum(f[k] for f in feats.values()) for k in ("compared", "matches", "mismatches", "missing", "extra")}
    return {"checked_at": now.isoformat(), "at": "event_time", "predictions": predictions,
            "compared_predictions": predictions, "not_yet_covered": 0, "features": feats, "totals": totals}


def _model(alias: str, version: str, pr: float, roc: float, cost: float, recall: float,
           rng: np.random.Generator) -> dict[str, Any]:
    def ci(v: float, rel: float) -> list[float]:
        half = abs(v) * rel * (0.8 + 0.4 * rng.random())
        return [v, v - half, v + half]

    return {"alias": alias, "version": version, "run_id": f"synthetic-{alias}", "candidate": "hgb",
            "trained_at": None, "model_version": f"synthetic-v{version}",
            "metrics": {"pr_auc": ci(pr, 0.05), "roc_auc": ci(roc, 0.01), "cost": ci(cost, 0.06),
                        "recall_at_p90": ci(recall / 100, 0.1)}}
