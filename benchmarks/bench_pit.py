"""Point-in-time joins for training sets, side by side on the same entity rows, same run:

* ``asof`` — DuckDB ASOF joins over Feast's registry (``training.pit_join``);
* ``spark`` — the same join as a Spark job on ``settings.spark_master``
  (``training.pit_join_spark``);
* ``feast_duckdb`` — Feast's ``get_historical_features`` on its duckdb offline store;
* ``feast_file`` — the same on Feast's file (dask) offline store.

The Feast stores are the baselines. All four return the same values (tested); the
features are the whole default FeatureService. The entity rows are ``size`` (user,
merchant, time) rows drawn from the lake's transactions (with replacement, times jittered
within the data's range). Feast's stores are far slower and hungrier (its duckdb store
peaked at 13 GB for 100k rows on the demo data), so they join at most
``feast_duckdb_cap`` / ``feast_file_cap`` rows (the output says when): rows/s is what is
compared. A failing contender is reported with its error, not a crash.

Each contender runs in a fresh child process, ``repeats`` times (medians reported); its
clock covers the join only — imports, the Feast registry and, for Spark, starting the
session (reported as ``spark_startup_seconds``) happen before. Peak memory is the child's
VmHWM plus, for Spark, its JVM's. Needs the demo's lake and offline tables
(``skewless demo``).
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.child import children_peak_rss_mb, in_child, peak_rss_mb
from skewless.settings import Settings

ENGINES = ("asof", "spark", "feast_duckdb", "feast_file")
OURS, BASELINES = ("asof", "spark"), ("feast_duckdb", "feast_file")


def entity_rows(settings: Settings, size: int, seed: int = 0) -> pd.DataFrame:
    from skewless.features.feast_objects import service_request_inputs
    from skewless.features.request_inputs import with_request_inputs
    from skewless.features.store import feature_store
    from skewless.lake import read_events

    tx = read_events(settings.lake_path, settings.topics.transactions, "event_time",
                     columns=["user_id", "merchant_id", "amount", "event_time"]).to_pandas()
    if tx.empty:
        raise RuntimeError("the lake has no transactions: run `skewless demo` first")
    rng = np.random.default_rng(seed)
    rows = tx.iloc[rng.integers(0, len(tx), size)].reset_index(drop=True)
    rows["event_time"] = rows["event_time"] + pd.to_timedelta(rng.integers(0, 3600, size), unit="s")
    # The request inputs (amount, event_epoch) as training and serving derive them.
    rows = with_request_inputs(service_request_inputs(feature_store(settings), settings.training.feature_service), rows)
    return rows.rename(columns={"event_time": "event_timestamp"})


def _join_fn(engine: str, settings: Settings, rows: pd.DataFrame, extra: dict[str, Any]):
    """The contender's join as a function of no arguments, set up (not timed)."""
    from skewless.features.store import feature_store

    service = settings.training.feature_service
    if engine == "asof":
        from training.pit_join import historical_features

        store = feature_store(settings)
        return lambda: historical_features(store, service, rows)
    if engine == "spark":
        from skewless.spark import spark_session
        from training.pit_join_spark import historical_features as on_spark

        store = feature_store(settings)
        t0 = time.perf_counter()
        spark_session(settings, app="skewless-pit")
        extra["startup_seconds"] = round(time.perf_counter() - t0, 2)
        return lambda: on_spark(store, service, rows, settings)
    store = feature_store(settings.model_copy(update={"offline_store": engine.removeprefix("feast_")}))
    fs = store.get_feature_service(service)
    return lambda: store.get_historical_features(entity_df=rows, features=fs, full_feature_names=True).to_df()


def _child(engine: str, settings: Settings, rows_path: str, repeats: int, out: Any) -> None:
    try:
        rows = pd.read_parquet(rows_path)
        extra: dict[str, Any] = {}
        join = _join_fn(engine, settings, rows, extra)
        rss_before = peak_rss_mb()
        seconds = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            n = len(join())
            seconds.append(time.perf_counter() - t0)
            if n != len(rows):
                raise RuntimeError(f"{n:,} rows came back for {len(rows):,}")
        jvm = children_peak_rss_mb() if engine == "spark" else None
        out.put({"rows": len(rows), "seconds": seconds, "rss_before_mb": rss_before,
                 "peak_rss_mb": (peak_rss_mb() or 0) + (jvm or 0), **extra})
    except Exception as exc:  # noqa: BLE001 - a contender failing is a result to report
        out.put({"error": f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300]})


def _figures(engine: str, m: dict[str, Any]) -> dict[str, Any]:
    if "error" in m:
        return {f"{engine}_error": m["error"]}
    median = statistics.median(m["seconds"])
    out = {f"{engine}_rows": m["rows"], f"{engine}_seconds": round(median, 2),
           f"{engine}_rows_per_s": round(m["rows"] / median), f"{engine}_runs_s": [round(s, 2) for s in m["seconds"]],
           f"{engine}_peak_rss_mb": round(m["peak_rss_mb"]), f"{engine}_rss_before_join_mb": round(m["rss_before_mb"])}
    if "startup_seconds" in m:
        out[f"{engine}_startup_seconds"] = m["startup_seconds"]
    return out


def run(settings: Settings, size: int = 100_000, repeats: int = 1, feast_duckdb_cap: int = 100_000,
        feast_file_cap: int = 20_000, **_: Any) -> dict[str, Any]:
    caps = {"feast_duckdb": feast_duckdb_cap, "feast_file": feast_file_cap}
    result: dict[str, Any] = {
        "benchmark": "pit", "size": size, "repeats": repeats, "feature_service": settings.training.feature_service,
        "spark_master": settings.spark_master, "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
    }
    tmp = Path(tempfile.mkdtemp(prefix="skewless-bench-pit-"))
    try:
        rows = entity_rows(settings, size)
        rps: dict[str, float] = {}
        for engine in ENGINES:
            n = min(size, caps.get(engine, size))
            path = tmp / f"rows-{n}.parquet"
            if not path.exists():
                rows.head(n).to_parquet(path)
            if n < size:
                result[f"{engine}_capped_at"] = n
            result.update(_figures(engine, in_child(_child, engine, settings, str(path), repeats)))
            if f"{engine}_rows_per_s" in result:
                rps[engine] = result[f"{engine}_rows_per_s"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for ours in OURS:
        for base in BASELINES:
            if ours in rps and base in rps:
                result[f"{ours}_vs_{base}"] = round(rps[ours] / rps[base], 1)
    if rps:
        result["fastest"] = max(rps, key=rps.get)
    baseline = next((b for b in reversed(BASELINES) if b in rps), None)  # the file store when it works
    result["baseline"] = baseline or "none (every Feast store failed)"
    if baseline and result.get("fastest") in OURS:
        result["ratio"] = round(rps[result["fastest"]] / rps[baseline], 1)
    capped = [f"{e} at {result[f'{e}_capped_at']:,} rows" for e in BASELINES
              if f"{e}_capped_at" in result and e in rps]
    if capped:
        result["note"] = "capped, too slow and memory-hungry for every row (rows/s compared): " + ", ".join(capped)
    return result
