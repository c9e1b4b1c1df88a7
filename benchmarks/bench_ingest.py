"""Ingestion: raw kafka-python consumption vs the full Kafka -> lake sink, same broker, same run.

(a) baseline: a bare kafka-python consumer group polls all N messages and decodes each
    JSON value (orjson) — nothing else; its consumer has the sink's settings
    (``ingestion.consumer.consumer_config``: fetch sizes, ``max_poll_records``,
    ``read_committed``...) and the same process environment (kafka-python with the
    ``crc32c`` C package, as ``pyproject.toml`` installs it), so the two compare on equal terms;
(b) the sink: ``ingestion.consumer.consume`` lands the same N messages in a fresh lake
    (validation, Parquet files, fsync, manifests, renames, offset commits).

Two kinds of traffic (``order``; both by default), each produced once to its own topic
before any clock starts (one simulated batch of at most 100k transactions, serialized once
and re-sent until N: producing is not measured):

* **in-order**: one day of event time, sent in event-time order (the simulator's order);
* **out-of-order**: ten days of event time, sent in a random (seeded) order — late and
  out-of-order traffic at its worst: every batch holds events of all ten dates, so it
  writes ten files (one per event date) and sorts each. The events stay valid under the
  contract: their times are in the past, so none is ahead of its Kafka timestamp (the
  one plausibility bound on event time besides [2000, 2100); lateness has no bound).

Both run in a fresh child process (so the parent's memory does not count). Each child
imports its modules and warms up before its clock starts (the sink's warm-up converts one
timestamp with pyarrow, which lazily imports pandas, ~0.2 s once per process: a startup
cost a long-running consumer pays once, not a per-event one). Both clocks then include
creating the consumer, joining a fresh consumer group and fetching; the sink's clock stops
when ``consume(max_messages=N)`` returns, i.e. after the last batch is written, fsynced,
renamed and its offsets committed, so no idle wait is counted. (a) and (b) alternate
``repeats`` times; medians are reported.

Memory: the sink child's peak RSS (VmHWM). The sink buffers at most
``ingest.flush_records`` events (and ``flush_bytes``) per assigned partition, so memory is
bounded by settings, not by the backlog; with ``size`` >= 200k a second sink run at
``size // 10`` shows it (``memory_growth_ratio``: peak at N / peak at N/10). Files: the
Parquet files of the first landing run's lake (count and mean size, dead letters apart).
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks.child import in_child, peak_rss_mb
from skewless.settings import Settings

START = datetime(2026, 2, 1, tzinfo=timezone.utc)
ORDERS = ("in-order", "out-of-order")
OUT_OF_ORDER_DAYS = 10


def check_args(order: str = "both", **_: Any) -> None:
    if order not in (*ORDERS, "both"):
        from skewless.errors import ConfigError

        raise ConfigError(f"unknown --order '{order}'", f"choose one of: {', '.join(ORDERS)}, both")


def _events(n: int, order: str) -> list[dict]:
    """At most 100k simulated transactions in the order they are sent (see the module doc)."""
    import random

    from ingestion.simulator import simulate

    if order == "in-order":
        # A day of event time: a backlog of N events spans hours, not weeks, of traffic.
        return simulate(min(n, 100_000), seed=1, start=START, days=1).transactions
    events = list(simulate(min(n, 100_000), seed=1, start=START, days=OUT_OF_ORDER_DAYS).transactions)
    random.Random(1).shuffle(events)
    return events


def _isolated(settings: Settings, topic: str, lake: str) -> Settings:
    return settings.model_copy(update={
        "lake_path": lake,
        "topics": settings.topics.model_copy(update={"transactions": topic}),
        "kafka": settings.kafka.model_copy(update={"consumer_group": f"bench-{uuid.uuid4().hex[:8]}"}),
    })


def _fill_topic(settings: Settings, topic: str, n: int, order: str) -> int:
    import orjson

    from ingestion.producer import make_producer
    from skewless.topics import ensure_topics

    ensure_topics(settings, [topic])
    msgs = [(tx["user_id"].encode(), orjson.dumps(tx)) for tx in _events(n, order)]
    producer = make_producer(settings)
    nbytes = 0
    for i in range(n):
        key, value = msgs[i % len(msgs)]
        nbytes += len(value)
        producer.send(topic, key=key, value=value)
    producer.flush(timeout=300)
    producer.close()
    return nbytes


def _raw_child(settings: Settings, topic: str, n: int, out: Any) -> None:
    import orjson
    from kafka import KafkaConsumer

    from ingestion.consumer import consumer_config

    t0 = time.perf_counter()
    c = KafkaConsumer(topic, **consumer_config(settings))  # the sink's consumer settings
    seen = 0
    loads = orjson.loads
    while seen < n:
        for msgs in c.poll(timeout_ms=500).values():
            for m in msgs:
                loads(m.value)
            seen += len(msgs)
    elapsed = time.perf_counter() - t0
    c.close()
    out.put({"seconds": elapsed, "messages": seen, "peak_rss_mb": peak_rss_mb()})


def _sink_child(settings: Settings, topic: str, n: int, out: Any) -> None:
    import pyarrow as pa

    from ingestion.consumer import consume

    pa.array([START], pa.timestamp("us", tz="UTC"))  # warm-up: pyarrow's lazy pandas import
    t0 = time.perf_counter()
    summary = consume(settings, topics=[topic], max_messages=n)
    elapsed = time.perf_counter() - t0
    out.put({"seconds": elapsed, "messages": summary["consumed"], "valid": summary["valid"],
             "files": sum(s["files"] for s in summary["topics"].values()),
             "batches": sum(s["batches"] for s in summary["topics"].values()),
             "peak_rss_mb": peak_rss_mb()})


def _lake_files(lake: str) -> tuple[int, int]:
    """(count, bytes) of the landed Parquet files of the lake's raw topics (no dead letters)."""
    from skewless.lake_layout import LakeLayout

    root = LakeLayout(lake).raw_root
    sizes = [p.stat().st_size for p in root.rglob("*.parquet") if not p.name.startswith((".", "_"))]
    return len(sizes), sum(sizes)


def _sink_run(settings: Settings, topic: str, n: int) -> dict:
    lake = tempfile.mkdtemp(prefix="skewless-bench-lake-")
    try:
        out = in_child(_sink_child, _isolated(settings, topic, lake), topic, n)
        out["lake_files"], out["lake_bytes"] = _lake_files(lake)
        return out
    finally:
        shutil.rmtree(lake, ignore_errors=True)


def _mode(settings: Settings, size: int, repeats: int, order: str, topics: list[str]) -> dict[str, Any]:
    """Both contenders on one kind of traffic: alternating runs, medians."""
    topic = f"bench-ingest-{uuid.uuid4().hex[:8]}"
    topics.append(topic)
    load = round(os.getloadavg()[0], 2)
    nbytes = _fill_topic(settings, topic, size, order)
    raw, sink = [], []
    for _ in range(repeats):
        raw.append(in_child(_raw_child, _isolated(settings, topic, "/nonexistent"), topic, size))
        sink.append(_sink_run(settings, topic, size))
    assert all(r["messages"] >= size for r in raw), raw
    assert all(s["messages"] >= size and s["valid"] >= size for s in sink), sink
    raw_eps = statistics.median(size / r["seconds"] for r in raw)
    sink_eps = statistics.median(size / s["seconds"] for s in sink)
    files, fbytes = sink[0]["lake_files"], sink[0]["lake_bytes"]
    result: dict[str, Any] = {
        "order": order,
        "message_bytes_avg": round(nbytes / size, 1),
        "baseline_events_per_s": round(raw_eps),
        "landing_events_per_s": round(sink_eps),
        "ratio": round(sink_eps / raw_eps, 3),
        "baseline_runs_s": [round(r["seconds"], 2) for r in raw],
        "landing_runs_s": [round(s["seconds"], 2) for s in sink],
        "landing_peak_rss_mb": round(max(s["peak_rss_mb"] for s in sink), 1),
        "baseline_peak_rss_mb": round(max(r["peak_rss_mb"] for r in raw), 1),
        "files_per_run": files,
        "mean_file_kb": round(fbytes / files / 1024, 1) if files else None,
        "batches_per_run": sink[0]["batches"],
        "load_avg_1m_at_start": load,
    }
    if size >= 200_000:
        small = size // 10
        small_topic = f"bench-ingest-{uuid.uuid4().hex[:8]}"
        topics.append(small_topic)
        _fill_topic(settings, small_topic, small, order)
        s = _sink_run(settings, small_topic, small)
        result["landing_peak_rss_mb_at_size_div_10"] = round(s["peak_rss_mb"], 1)
        result["memory_growth_ratio"] = round(result["landing_peak_rss_mb"] / s["peak_rss_mb"], 3)
    result["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    return result


def run(settings: Settings, size: int = 100_000, repeats: int = 3, order: str = "both", **_: Any) -> dict[str, Any]:
    from kafka import KafkaAdminClient

    check_args(order)
    topics: list[str] = []
    result: dict[str, Any] = {
        "benchmark": "ingest", "size": size, "repeats": repeats,
        "baseline": "raw kafka-python poll + orjson decode",
        "partitions": settings.kafka.partitions,
        "flush_records_per_partition": settings.ingest.flush_records,
        "flush_bytes_per_partition": settings.ingest.flush_bytes,
        "max_dates_per_batch": settings.ingest.max_dates_per_batch,
    }
    try:
        for o in ORDERS if order == "both" else (order,):
            result[o.replace("-", "_")] = _mode(settings, size, repeats, o, topics)
        modes = [result[o.replace("-", "_")] for o in ORDERS if o.replace("-", "_") in result]
        # The headline: the worse of the kinds of traffic measured.
        result["ratio_min"] = min(m["ratio"] for m in modes)
        result["landing_events_per_s_min"] = min(m["landing_events_per_s"] for m in modes)
        return result
    finally:
        admin = KafkaAdminClient(**settings.kafka.client_config())
        try:
            admin.delete_topics(topics)
        except Exception:  # noqa: BLE001 - best effort cleanup
            pass
        admin.close()


ROWS = (  # (figure, key in a traffic's result, format)
    ("raw kafka-python events/s", "baseline_events_per_s", "{:,}"),
    ("landing events/s", "landing_events_per_s", "{:,}"),
    ("ratio (landing / raw)", "ratio", "{:.3f}"),
    ("files per run", "files_per_run", "{:,}"),
    ("mean file KB", "mean_file_kb", "{}"),
    ("batches per run", "batches_per_run", "{:,}"),
    ("landing peak RSS MB", "landing_peak_rss_mb", "{}"),
    ("  same at N/10", "landing_peak_rss_mb_at_size_div_10", "{}"),
    ("  growth N/10 -> N", "memory_growth_ratio", "{}"),
    ("raw peak RSS MB", "baseline_peak_rss_mb", "{}"),
    ("load (1 min) at start", "load_avg_1m_at_start", "{}"),
    ("load (1 min) at end", "load_avg_1m_at_end", "{}"),
)


def table(result: dict[str, Any]):
    from rich.table import Table

    modes = [(o, result[o.replace("-", "_")]) for o in ORDERS if o.replace("-", "_") in result]
    t = Table("figure", *(o for o, _ in modes),
              title=f"ingest: {result['size']:,} events, {result['partitions']} partitions, flush_records "
              f"{result['flush_records_per_partition']:,}, medians of {result['repeats']}")
    for label, key, fmt in ROWS:
        if any(key in m for _, m in modes):
            t.add_row(label, *(fmt.format(m[key]) if m.get(key) is not None else "-" for _, m in modes))
    return t
