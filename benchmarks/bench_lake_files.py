"""Lake file health: files and mean file size, event-hour vs event-date partitioning, before
and after ``skewless lake compact``, and Spark's read time on each.

``skewless bench lake_files [--size 100000] [--repeats 2]``. For two kinds of traffic, each
``size`` simulated transactions over 10 days of event time, produced to a fresh topic
(``settings.kafka.partitions`` partitions) with the project's producer:

* **in_order** — sent in event-time order (the simulator's order);
* **out_of_order** — the same events sent in a random (seeded) order: every batch holds
  event times spread over all 10 days, as late and out-of-order real traffic does.

Each is landed by the real sink (``ingestion.consumer.consume``, the project's settings,
event-date partitions) into a fresh lake. Then:

* **baseline (event-hour layout, as before issue 13)**: the same landed batches (from the
  sink's manifests) re-cut the way the old sink cut them — a batch also closed once it
  spanned ``BASELINE_MAX_HOURS`` (72) event hours, and wrote one file per (hour, batch) —
  and written with the same Parquet settings under ``date=/hour=/``. (Closing a batch
  earlier also moves later record-count boundaries; that is ignored, so the baseline's
  count is if anything low.) With more than ``BASELINE_WRITE_MAX`` files, a deterministic
  sample of that many is written to measure the mean size (the count is exact);
* **date layout**: the files the sink wrote;
* **compacted**: after ``ingestion.compact.run`` (grace 0).

Spark read time (the ETL's reader, ``etl.batch.read_raw``, then an aggregate that reads
every column the transaction views use): on the date layout before and after compaction
(median of ``repeats``, after one uncounted warm-up read), and on the baseline when it
was written whole.
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from skewless.settings import Settings

START = datetime(2026, 2, 1, tzinfo=timezone.utc)
DAYS = 10
BASELINE_MAX_HOURS = 72
BASELINE_WRITE_MAX = 20_000


def _isolated(settings: Settings, root: Path, tag: str) -> Settings:
    return settings.model_copy(update={
        "lake_path": str(root / "lake"), "state_dir": root / "state",
        "topics": settings.topics.model_copy(update={"transactions": f"bench-lakefiles-{tag}-tx"}),
        "kafka": settings.kafka.model_copy(update={"consumer_group": f"bench-lakefiles-{tag}"}),
        "compaction": settings.compaction.model_copy(update={"grace_s": 0}),
    })


def _produce(settings: Settings, events: list[dict]) -> None:
    import orjson

    from ingestion.producer import make_producer
    from skewless.topics import ensure_topics

    topic = settings.topics.transactions
    ensure_topics(settings, [topic])
    producer = make_producer(settings)
    for e in events:
        producer.send(topic, key=e["user_id"].encode(), value=orjson.dumps(e))
    producer.flush(timeout=600)
    producer.close()


def _files(paths: list[Path]) -> dict[str, Any]:
    sizes = [p.stat().st_size for p in paths]
    return {"files": len(sizes), "mean_file_kb": round(statistics.fmean(sizes) / 1024, 1) if sizes else 0.0,
            "median_file_kb": round(statistics.median(sizes) / 1024, 1) if sizes else 0.0,
            "total_mb": round(sum(sizes) / 1e6, 2)}


def _baseline(settings: Settings, out_root: Path) -> tuple[dict[str, Any], Path | None]:
    """The landed batches re-cut into the old event-hour files; returns figures and the
    baseline lake's topic dir when every file was written."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from skewless.lake_layout import LakeLayout

    layout = LakeLayout.of(settings)
    topic = settings.topics.transactions
    by_stem: dict[str, list[Path]] = defaultdict(list)
    for f in layout.raw_files(topic):
        by_stem[f.path.stem].append(f.path)
    # Every old file as (stem, date, hour, row indices into the stem's table): only the files
    # written are materialised (at 1M out-of-order events there are ~800k of them).
    tables: dict[str, pa.Table] = {}
    pieces: list[tuple[str, str, int, list[int]]] = []
    for stem, paths in sorted(by_stem.items()):
        t = pa.concat_tables([pq.read_table(p) for p in paths], promote_options="default").sort_by("_kafka_offset")
        tables[stem] = t
        hours_key = pc.strftime(t.column("event_time"), format="%Y-%m-%d %H").to_pylist()
        # The old rotation: close the batch right after the record that makes it span 72 hours.
        groups: dict[str, list[int]] = {}
        for i, h in enumerate(hours_key):
            groups.setdefault(h, []).append(i)
            if len(groups) >= BASELINE_MAX_HOURS:
                pieces.extend((stem, k[:10], int(k[11:]), idx) for k, idx in groups.items())
                groups = {}
        pieces.extend((stem, k[:10], int(k[11:]), idx) for k, idx in groups.items())
    whole = len(pieces) <= BASELINE_WRITE_MAX
    sample = pieces if whole else random.Random(0).sample(pieces, BASELINE_WRITE_MAX)
    root = out_root / "raw" / topic
    written = []
    for n, (stem, d, h, idx) in enumerate(sample):
        table = tables[stem].take(pa.array(idx))
        p = root / f"date={d}" / f"hour={h:02d}" / f"{topic}+{n}.parquet"
        p.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.drop_columns(["date"]) if "date" in table.column_names else table, p,
                       compression=settings.ingest.compression, row_group_size=settings.ingest.row_group_records,
                       write_statistics=True)
        written.append(p)
    figures = _files(written)
    figures["files"] = len(pieces)
    figures["total_mb"] = round(figures["mean_file_kb"] * 1024 * len(pieces) / 1e6, 2)
    figures["size_from_sample"] = None if whole else len(sample)
    return figures, (root if whole else None)


def _spark_read(spark, settings: Settings, baseline_root: Path | None = None) -> float:
    """One ETL-style read of the raw transactions: list, plan, scan the views' columns."""
    from pyspark.sql import functions as F

    from etl.batch import _spark_schema, read_raw
    from skewless.contracts import TRANSACTIONS
    from skewless.lake import topic_schema

    t0 = time.perf_counter()
    if baseline_root is None:
        df = read_raw(spark, settings, "transactions", None, None)
    else:
        import pyarrow as pa

        schema = topic_schema(TRANSACTIONS).append(pa.field("hour", pa.int32()))
        df = spark.read.schema(_spark_schema(schema)).option("basePath", str(baseline_root)).parquet(
            str(baseline_root))
    df.agg(F.count(F.lit(1)), F.sum("amount"), F.countDistinct("user_id"), F.max("event_time")).collect()
    return time.perf_counter() - t0


def _mode(settings: Settings, base: Path, name: str, events: list[dict], spark, repeats: int,
          progress: Callable[[str], None]) -> dict[str, Any]:
    from ingestion import compact
    from ingestion.consumer import consume
    from skewless.lake_layout import LakeLayout

    tag = f"{name}-{uuid.uuid4().hex[:6]}"
    s = _isolated(settings, base / name, tag)
    progress(f"{name}: producing {len(events):,}")
    _produce(s, events)
    progress(f"{name}: landing")
    landed = consume(s, until_idle=3.0, max_messages=len(events), topics=[s.topics.transactions])
    topic = s.topics.transactions
    layout = LakeLayout.of(s)
    dated = _files([f.path for f in layout.raw_files(topic)])
    progress(f"{name}: baseline (event-hour files)")
    baseline, baseline_root = _baseline(s, base / name / "baseline")
    read = {"date_layout": [], "compacted": [], "baseline": []}
    _spark_read(spark, s)  # warm-up (class loading, code generation): not counted
    for _ in range(repeats):
        progress(f"{name}: Spark reads, before compaction")
        read["date_layout"].append(_spark_read(spark, s))
        if baseline_root is not None:
            read["baseline"].append(_spark_read(spark, s, baseline_root))
    progress(f"{name}: compacting")
    t0 = time.perf_counter()
    report = compact.run(s, [topic])
    compact_s = time.perf_counter() - t0
    compacted = _files([f.path for f in layout.raw_files(topic)])
    for _ in range(repeats):
        progress(f"{name}: Spark reads, after compaction")
        read["compacted"].append(_spark_read(spark, s))
    med = {k: round(statistics.median(v), 2) if v else None for k, v in read.items()}
    return {
        "events": len(events), "landed_valid": landed["valid"], "landing_events_per_s": landed["events_per_s"],
        "baseline": baseline, "date_layout": dated, "compacted": compacted,
        "compaction_seconds": round(compact_s, 2), "compaction": report["topics"][topic],
        "spark_read_s": med,
        "files_ratio_date_vs_baseline": round(dated["files"] / baseline["files"], 4) if baseline["files"] else None,
        "read_ratio_compacted_vs_date": round(med["compacted"] / med["date_layout"], 3) if med["date_layout"] else None,
        "topic": topic, "group": s.kafka.consumer_group,
    }


def run(settings: Settings, size: int = 100_000, repeats: int = 2,
        progress: Callable[[str], None] | None = None, **_: Any) -> dict[str, Any]:
    from benchmarks.bench_freshness import _drop_topics
    from ingestion.simulator import simulate
    from skewless.spark import spark_session

    progress = progress or (lambda _msg: None)
    repeats = max(1, min(repeats, 3))
    sim = simulate(size, seed=13, start=START, days=DAYS).transactions
    shuffled = list(sim)
    random.Random(13).shuffle(shuffled)
    spark = spark_session(settings, app="bench-lake-files")
    spark.range(1000).selectExpr("sum(id)").collect()  # the JVM's first query is not a read's cost
    base = Path(tempfile.mkdtemp(prefix="bench-lake-files-"))
    result: dict[str, Any] = {"size": size, "days": DAYS, "partitions": settings.kafka.partitions,
                              "flush_records": settings.ingest.flush_records,
                              "max_dates_per_batch": settings.ingest.max_dates_per_batch,
                              "baseline_max_hours_per_batch": BASELINE_MAX_HOURS,
                              "target_file_mb": round(settings.compaction.target_file_bytes / 1e6, 1)}
    topics, groups = [], []
    try:
        for name, events in (("in_order", sim), ("out_of_order", shuffled)):
            r = _mode(settings, base, name, events, spark, repeats, progress)
            topics.append(r.pop("topic"))
            groups.append(r.pop("group"))
            result[name] = r
    finally:
        left = _drop_topics(settings, topics, groups)
        shutil.rmtree(base, ignore_errors=True)
    result["topics_left"] = left
    result["load_1m"] = round(os.getloadavg()[0], 1)
    return result


def table(result: dict[str, Any]):
    from rich.table import Table

    t = Table("traffic", "layout", "files", "mean file KB", "median KB", "MB", "Spark read (s)",
              title=f"lake files: {result['size']:,} events over {result['days']} days, {result['partitions']} "
              f"partitions, flush_records {result['flush_records']:,} (load {result['load_1m']})")
    for name in ("in_order", "out_of_order"):
        r = result.get(name)
        if not r:
            continue
        for layout, label in (("baseline", "event hour (before)"), ("date_layout", "event date"),
                              ("compacted", "event date, compacted")):
            f = r[layout]
            sampled = f" (size from {f['size_from_sample']:,} written)" if f.get("size_from_sample") else ""
            t.add_row(name, label, f"{f['files']:,}{sampled}", f"{f['mean_file_kb']:,}", f"{f['median_file_kb']:,}",
                      f"{f['total_mb']:,}", str(r["spark_read_s"][layout]))
    return t


if __name__ == "__main__":  # python -m benchmarks.bench_lake_files
    import json

    from skewless.settings import load_settings

    print(json.dumps(run(load_settings(), size=20_000, repeats=1), default=str))
