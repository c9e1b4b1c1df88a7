"""The monitoring report's size and time at scale: ``skewless monitor report``'s page for
``size`` predictions (1,000,000 by default) x 25 model features, against the baseline of a
report that embeds the rows (the way Evidently's HTML reports carry their data).

The prediction log is synthesised (``monitoring.report_synthetic``): 25 features (lognormal,
Poisson, normal and uniform numbers, some with missing values; one in five categorical),
the score, 24 hourly windows with drift growing over the last 40% of them; a reference of
200,000 training rows. Each window is binned on the reference's histograms and checked with
``monitoring.drift.detect``, as ``skewless monitor drift`` does, plus one check over all
windows (the newest, whose live histograms the page draws); dead letters, a served
consistency result, freshness and a champion and challenger with bootstrap intervals fill
the other sections. Then the page is drawn ``repeats`` times (median time) and written.

Figures: ``report_bytes`` (the target: <= 5 MB at 1M x 25), ``render_seconds`` (drawing and
writing the page from its inputs: what ``monitor report`` adds to reading them),
``summarise_seconds`` (binning and checking the synthetic rows, which the drift checks do in
production, reported for scale), ``svg_elements``; the baseline ``raw_csv_bytes``, the
rows x (features + score) as CSV (a lower bound for embedding them: JSON is larger), counted
chunk by chunk in memory, and ``ratio`` = report / raw.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from monitoring.report import write_report
from monitoring.report_html import render
from monitoring.report_synthetic import _sample, _score, feature_names, synthetic_inputs
from skewless.settings import Settings

FEATURES = 25
TARGET_BYTES = 5 * 1024 * 1024
CHUNK = 100_000


def raw_csv_bytes(rows: int, features: int, seed: int = 1) -> int:
    """Bytes of ``rows`` synthetic predictions (features and score) written as CSV."""
    rng = np.random.default_rng(seed)
    names = feature_names(features)
    total = 0
    for start in range(0, rows, CHUNK):
        n = min(CHUNK, rows - start)
        cols = _sample(names, n, rng)
        cols["score"] = _score(n, rng)
        total += len(pd.DataFrame(cols).to_csv(index=False, header=start == 0).encode())
    return total


def run(settings: Settings, size: int = 1_000_000, repeats: int = 3,
        progress: Callable[[str], None] | None = None, **_: Any) -> dict[str, Any]:
    step = progress or (lambda _: None)
    t0 = time.perf_counter()
    inputs = synthetic_inputs(predictions=size, features=FEATURES, settings=settings.monitoring, on_step=step)
    summarise_s = time.perf_counter() - t0
    times = []
    for r in range(repeats):
        step(f"drawing the page ({r + 1}/{repeats})")
        t = time.perf_counter()
        html = render(inputs)
        times.append(time.perf_counter() - t)
    with tempfile.TemporaryDirectory(prefix="skewless-bench-report-") as tmp:
        t = time.perf_counter()
        written = write_report(inputs, Path(tmp))
        write_s = time.perf_counter() - t
    step("baseline: the rows as CSV")
    t = time.perf_counter()
    raw = raw_csv_bytes(size, FEATURES)
    raw_s = time.perf_counter() - t
    report_bytes = written["bytes"]
    checks = inputs.drift.data["checks"]
    return {
        "predictions": size, "features": FEATURES, "drift_checks": len(checks),
        "drifted_features_newest": len(checks[-1]["drifted_features"]),
        "report_bytes": report_bytes, "report_mb": round(report_bytes / 1024 / 1024, 3),
        "target_mb": TARGET_BYTES / 1024 / 1024, "within_target": report_bytes <= TARGET_BYTES,
        "render_seconds": round(statistics.median(times), 3), "write_seconds": round(write_s, 3),
        "summarise_seconds": round(summarise_s, 1),
        "svg_elements": html.count("<svg"), "script_tags": html.count("<script"),
        "baseline_raw_csv_bytes": raw, "baseline_raw_csv_mb": round(raw / 1024 / 1024, 1),
        "baseline_seconds": round(raw_s, 1),
        "ratio": round(report_bytes / raw, 6) if raw else None,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def table(result: dict[str, Any]):
    from rich.table import Table

    t = Table(title=f"benchmark report: {result['predictions']:,} predictions x {result['features']} features, "
                    f"{result['drift_checks']} drift checks")
    t.add_column("figure")
    t.add_column("report (histograms)", justify="right")
    t.add_column("baseline (rows as CSV)", justify="right")
    t.add_row("size", f"{result['report_bytes'] / 1024:,.0f} kB", f"{result['baseline_raw_csv_mb']:,} MB")
    t.add_row("ratio", f"{result['ratio']:.2e}", "1")
    t.add_row("target <= 5 MB", "met" if result["within_target"] else "MISSED", "")
    t.add_row("draw (median)", f"{result['render_seconds']} s", f"{result['baseline_seconds']} s (CSV)")
    t.add_row("svg charts / scripts", f"{result['svg_elements']} / {result['script_tags']}", "")
    t.add_row("binning + checks (synthetic)", f"{result['summarise_seconds']} s", "")
    return t
