"""``skewless etl run``: the Spark batch job, lake raw events -> offline feature tables.

Each view's table is written to ``<lake>/features/<view>/date=YYYY-MM-DD/`` (Parquet),
the path Feast's sources point at. Runs are:

* **idempotent** — output dates are replaced whole (dynamic partition overwrite), so a
  re-run of a range rewrites identical rows;
* **incremental** — by default only dates from the earliest raw file landed since the
  previous run (late events included) are recomputed, reading raw events back as far as
  the longest window needs (the lookback);
* a **backfill** of any range with ``start``/``end`` (dates, UTC).
"""

from __future__ import annotations

import json
import os
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from etl.spark import spark_session
from etl.transforms import TS, source_events, windowed_features
from skewless.errors import DataError
from skewless.features.dsl import WindowedView
from skewless.settings import Settings

STATE_FILE = "etl_state.json"


def features_dir(settings: Settings, view: str) -> str:
    return f"{settings.lake_path}/features/{view}"


def _raw_dir(settings: Settings, contract: str) -> Path:
    return Path(settings.lake_path) / "raw" / getattr(settings.topics, contract)


def _raw_dates(settings: Settings, contract: str, newer_than: float | None = None) -> list[date]:
    """Dates with raw files (optionally only files landed after ``newer_than``, a unix time)."""
    out = set()
    root = _raw_dir(settings, contract)
    if not root.is_dir():
        return []
    for d in root.iterdir():
        if not d.name.startswith("date="):
            continue
        files = (p for p in d.rglob("*.parquet") if not p.name.startswith((".", "_")))
        if newer_than is None or any(p.stat().st_mtime >= newer_than for p in files):
            out.add(date.fromisoformat(d.name[5:]))
    return sorted(out)


def read_raw(spark: SparkSession, settings: Settings, contract: str, start: date | None, end: date | None) -> DataFrame:
    """Raw events of a contract, pruned to the date partitions in ``[start, end)``."""
    root = _raw_dir(settings, contract)
    if not root.is_dir():  # nothing landed for this contract yet: an empty frame of its schema
        from skewless.contracts import CONTRACTS

        schema = CONTRACTS[contract].arrow_schema().append(pa.field("date", pa.date32()))
        return spark.createDataFrame([], schema=_spark_schema(schema))
    df = spark.read.option("mergeSchema", "true").option("basePath", str(root)).parquet(str(root))
    if start is not None:
        df = df.where(F.col("date") >= F.lit(start.isoformat()).cast("date"))
    if end is not None:
        df = df.where(F.col("date") < F.lit(end.isoformat()).cast("date"))
    return df


def _spark_schema(schema) -> Any:
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)


def _state(settings: Settings) -> dict:
    p = settings.state_dir / STATE_FILE
    return json.loads(p.read_text()) if p.exists() else {}


def _save_state(settings: Settings, state: dict) -> None:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    tmp = settings.state_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, settings.state_dir / STATE_FILE)


def plan_range(settings: Settings, start: date | None, end: date | None) -> tuple[date, date] | None:
    """The output dates to (re)compute: explicit, or incremental since the last run."""
    all_dates = _raw_dates(settings, "transactions") + _raw_dates(settings, "labels")
    if not all_dates:
        return None
    last_view_day = max(all_dates) + timedelta(days=31)  # leave rows: up to the longest window later
    if start is None:
        state = _state(settings)
        if state.get("started_at") is None:
            start = min(all_dates)
        else:
            changed = (_raw_dates(settings, "transactions", state["started_at"])
                       + _raw_dates(settings, "labels", state["started_at"]))
            if not changed:
                return None
            start = min(changed)
    return start, end or last_view_day


def compute_views(views: tuple[WindowedView, ...], frames: dict[str, DataFrame]) -> dict[str, DataFrame]:
    """Every view's table from the raw frames (pure transformation, no I/O)."""
    return {v.name: windowed_features(v, source_events(v.source, frames)) for v in views}


def run_batch(
    settings: Settings,
    start: date | None = None,
    end: date | None = None,
    master: str | None = None,
    views: tuple[WindowedView, ...] | None = None,
    on_view: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Compute and write the offline feature tables for output dates in ``[start, end)``."""
    from feature_repo.specs import VIEWS

    views = views or VIEWS
    t0 = time.time()
    planned = plan_range(settings, start, end)
    if planned is None:
        has_raw = _raw_dates(settings, "transactions")
        if not has_raw:
            raise DataError(f"no raw events in {settings.lake_path}/raw", "land some with: skewless ingest consume")
        return {"views": {}, "skipped": "no raw files landed since the previous run", "seconds": 0.0}
    out_start, out_end = planned
    spark = spark_session(settings, master)
    lookback = max(v.max_window + v.hop_td for v in views)
    read_start = out_start - timedelta(days=lookback.days + 1)
    # Every view reads the same raw events: read them once.
    frames = {c: read_raw(spark, settings, c, read_start, out_end).persist() for c in ("transactions", "labels")}
    events_read = frames["transactions"].count()
    lo = datetime.combine(out_start, datetime.min.time(), tzinfo=timezone.utc)
    hi = datetime.combine(out_end, datetime.min.time(), tzinfo=timezone.utc)
    summary: dict[str, Any] = {"views": {}}
    for i, (name, table) in enumerate(compute_views(views, frames).items()):
        table = (table.where((F.col(TS) >= F.lit(lo)) & (F.col(TS) < F.lit(hi)))
                 .withColumn("date", F.to_date(F.col(TS))))
        (table.repartition("date").write.mode("overwrite").partitionBy("date")
         .option("compression", "zstd").parquet(features_dir(settings, name)))
        rows = spark.read.parquet(features_dir(settings, name)).where(
            (F.col("date") >= F.lit(out_start)) & (F.col("date") < F.lit(out_end))).count()
        summary["views"][name] = {"rows": rows, "path": features_dir(settings, name)}
        if on_view:
            on_view(name, i + 1, len(views))
    for f in frames.values():
        f.unpersist()
    _save_state(settings, {"started_at": t0, "range": [out_start.isoformat(), out_end.isoformat()]})
    elapsed = time.time() - t0
    summary.update({"start": out_start.isoformat(), "end": out_end.isoformat(), "events_read": events_read,
                    "seconds": round(elapsed, 2), "events_per_s": round(events_read / elapsed, 1) if elapsed else None,
                    "master": master or settings.spark_master})
    return summary
