"""The Spark batch feature job: backfill events/s at two sizes (does time grow linearly
with events?) and the cost of an incremental run after 1% new events, against the full
backfill (the baseline) of the same lake, in the same run.

Data: the seeded payments simulator over ``days`` days (users and merchants grow with
the event count, so per-entity density stays the same). Each size gets a private lake
under ``<state_dir>/bench/``, removed afterwards. Spark's start-up (JVM, session) is
measured on its own, then a tiny warm-up run (code generation) is outside the clock;
the ratios are given without and with the start-up a fresh ``skewless etl run`` pays.

The incremental run recomputes only the entities of the new events (``etl.incremental``),
and adds the new events' rows to the tables of count-only views (``mode`` per view); when it
can, it runs in-process without Spark (``engine``: ``local``), and then a fresh process pays
no Spark start-up either (the ratio with start-up adds it to the backfill only).
``old_way=True`` also times what incremental runs did before: every entity of the dates from
the new events' on (a backfill from that date, the same lake, after the incremental run).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from benchmarks.lake_writer import land_frame
from skewless.settings import Settings

START = datetime(2026, 3, 1, tzinfo=timezone.utc)


def _private(settings: Settings, root: Path, name: str) -> Settings:
    return settings.model_copy(update={"lake_path": str(root / name / "lake"), "state_dir": root / name / "state"})


def _land(settings: Settings, events: int, seed: int, start: datetime, days: int) -> None:
    from ingestion.simulator import simulate

    sim = simulate(events, seed, start, days)
    land_frame(settings.lake_path, settings.topics.transactions, "transactions", sim.transactions)
    land_frame(settings.lake_path, settings.topics.labels, "labels", sim.labels)


def _backfill(settings: Settings, root: Path, name: str, events: int, days: int, seed: int) -> tuple[Settings, float, dict]:
    s = _private(settings, root, name)
    _land(s, events, seed, START, days)
    from etl.batch import run_batch
    from skewless.features.definitions import load

    views = load(s).views
    t0 = time.perf_counter()
    summary = run_batch(s, views=views)
    return s, time.perf_counter() - t0, summary


def run(settings: Settings, size: int = 100_000, days: int = 30, seed: int = 7, old_way: bool = False,
        **_: Any) -> dict[str, Any]:
    from etl.batch import run_batch
    from skewless.features.definitions import load
    from skewless.spark import spark_session

    base = Path(settings.state_dir) / "bench"
    base.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="etl-", dir=base))
    old_s = None
    try:
        t0 = time.perf_counter()
        spark_session(settings)  # the fixed cost of a fresh process: JVM and session start
        startup_s = time.perf_counter() - t0
        _backfill(settings, root, "warmup", 2_000, 2, seed)
        small = max(1_000, size // 10)
        _, small_s, _ = _backfill(settings, root, "small", small, days, seed)
        big, big_s, big_sum = _backfill(settings, root, "big", size, days, seed)
        # 1% new events over the last day of data (existing users and merchants), landed after the run.
        new = max(1, size // 100)
        _land(big, new, seed + 1, START + timedelta(days=days - 1), 1)
        t0 = time.perf_counter()
        inc = run_batch(big, views=load(big).views)
        inc_s = time.perf_counter() - t0
        if old_way and inc.get("start"):
            from datetime import date

            t0 = time.perf_counter()
            run_batch(big, start=date.fromisoformat(inc["start"]), views=load(big).views)
            old_s = time.perf_counter() - t0
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rows = sum(v["rows"] for v in big_sum["views"].values())
    views = inc.get("views", {})
    return {
        "benchmark": "etl", "days": days, "views": len(big_sum["views"]),
        "events_small": small, "backfill_small_s": round(small_s, 2), "events_per_s_small": round(small / small_s),
        "events": size, "backfill_s": round(big_s, 2), "events_per_s": round(size / big_s), "feature_rows": rows,
        "time_growth_per_event_growth": round((big_s / small_s) / (size / small), 2),
        "incremental_new_events": new, "incremental_s": round(inc_s, 2),
        "incremental_dates": f"{inc.get('start')}..{inc.get('end')}",
        "incremental_events_read": inc.get("events_read"),
        "incremental_entities": {k: v.get("entities") for k, v in views.items()},
        "incremental_modes": {k: v.get("mode") for k, v in views.items()},
        "incremental_rows_recomputed": sum(v.get("rows", 0) for v in views.values()),
        "incremental_rows_carried": sum(v.get("rows_carried", 0) for v in views.values()),
        "incremental_phases": inc.get("phases"), "backfill_phases": big_sum.get("phases"),
        "spark_startup_s": round(startup_s, 2),
        "incremental_old_way_s": round(old_s, 2) if old_s is not None else None,
        "baseline": "full backfill of the same lake", "baseline_s": round(big_s, 2),
        "incremental_cost_vs_backfill": round(inc_s / big_s, 3),
        # A fresh `skewless etl run` pays Spark's start-up only when it runs Spark (engine).
        "incremental_engine": inc.get("engine"),
        "incremental_cost_vs_backfill_with_startup": round(
            (inc_s + (startup_s if inc.get("engine") != "local" else 0.0)) / (big_s + startup_s), 3),
        "old_way_cost_vs_backfill": round(old_s / big_s, 3) if old_s is not None else None,
        "ratio": round(big_s / inc_s, 1),
    }
