"""The stream's online writer: Feast's ``provider.ingest_df`` (the baseline) against the
column-wise writer (``etl.redis_rows``), same frames, same private Redis, one run.

1. **rows/s** — frames of ``size`` rows shaped as ``etl.windows.view_rows`` makes them
   (join keys, ``event_timestamp``, features; 10% decayed rows with null features) for
   ``user_spend`` (one join key, 12 features) and ``user_merchant`` (two join keys, one
   feature) of ``feature_repo``; each repeat writes one frame through each writer, in
   alternating order, into its own database of a private ``redis-server``; medians.
   After the runs both databases must hold the same bytes (every key, field, ``DUMP``), or
   the benchmark fails.
2. **processor** (``processor_size`` > 0) — ``etl.stream.Processor.apply`` in-process (no
   Spark): simulated transactions as Kafka records in batches of 5,000 through every view of
   ``feature_repo``, each batch at its own clock, once with each writer; records/s and the
   publish phase (rows written, seconds).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from skewless.settings import Settings

VIEWS = ("user_spend", "user_merchant")
START = datetime(2026, 3, 1, tzinfo=timezone.utc)


def frame(view, rng: np.random.Generator, n: int, entities: int = 5_000) -> pd.DataFrame:
    cols: dict[str, Any] = {k: np.array([f"{k[0]}{i:06d}" for i in rng.integers(0, entities, n)], dtype=object)
                            for k in view.join_keys}
    b = int(START.timestamp()) + rng.integers(0, 86_400, n)
    cols["event_timestamp"] = pd.to_datetime(b * 1_000_000, unit="us", utc=True)
    dead = rng.random(n) < 0.1
    for a in view.aggregations:
        if a.output_type == "int64":
            cols[a.feature_name] = np.where(dead, 0, rng.integers(1, 40, n)).astype("int64")
        else:
            v = np.round(rng.gamma(2.0, 40.0, n), 2)
            cols[a.feature_name] = np.where(dead, np.nan, v)
    return pd.DataFrame(cols)


def _writers(settings: Settings, port: int, project: str):
    from etl.online_writer import OnlineWriter
    from skewless.features import store as feast_store
    from skewless.features.definitions import load

    defs = load(settings)
    base = settings.model_copy(update={"feast_project": project, "online_store": "redis"})
    ref = base.model_copy(update={"redis_url": f"redis://127.0.0.1:{port}/1"})
    fast = base.model_copy(update={"redis_url": f"redis://127.0.0.1:{port}/2"})
    feast_store.apply(ref, defs)
    return defs, (OnlineWriter(ref, fast=False), ref.redis_url), (OnlineWriter(fast), fast.redis_url)


def _same_bytes(port: int) -> bool:
    import redis

    a, b = redis.Redis(port=port, db=1), redis.Redis(port=port, db=2)
    keys = set(a.scan_iter(count=1000))
    if keys != set(b.scan_iter(count=1000)):
        return False
    return all(list(a.hgetall(k).items()) == list(b.hgetall(k).items()) and a.dump(k) == b.dump(k) for k in keys)


def writer_rates(defs, ref, fast, size: int, repeats: int, progress: Callable[[str], None]) -> dict[str, Any]:
    views = {v.name: v for v in defs.views}
    out: dict[str, Any] = {}
    for name in VIEWS:
        view = views[name]
        feast_s, fast_s, feast_cpu, fast_cpu = [], [], [], []
        for r in range(repeats):
            df = frame(view, np.random.default_rng(r), size)
            order = [("feast", ref), ("fast", fast)] if r % 2 == 0 else [("fast", fast), ("feast", ref)]
            for tag, w in order:
                progress(f"{name}: repeat {r + 1}/{repeats}, {tag} writer")
                t, c = time.perf_counter(), time.process_time()
                w.write(name, df)
                (feast_s if tag == "feast" else fast_s).append(time.perf_counter() - t)
                (feast_cpu if tag == "feast" else fast_cpu).append(time.process_time() - c)
        f, c = statistics.median(feast_s), statistics.median(fast_s)
        out[name] = {"join_keys": len(view.join_keys), "features": len(view.features), "rows": size,
                     "feast_rows_per_s": round(size / f), "fast_rows_per_s": round(size / c),
                     "feast_us_per_row": round(f / size * 1e6, 2), "fast_us_per_row": round(c / size * 1e6, 2),
                     "ratio": round(f / c, 1),
                     # this process's CPU (conversion, encoding, socket I/O), less sensitive to a loaded machine
                     "feast_cpu_us_per_row": round(statistics.median(feast_cpu) / size * 1e6, 2),
                     "fast_cpu_us_per_row": round(statistics.median(fast_cpu) / size * 1e6, 2),
                     "feast_s": [round(x, 4) for x in feast_s],
                     "fast_s": [round(x, 4) for x in fast_s]}
    return out


def _records(transactions: list[dict], topic: str) -> pd.DataFrame:
    ts = pd.to_datetime([t["event_time"] for t in transactions], utc=True, format="ISO8601")
    return pd.DataFrame({
        "topic": topic, "partition": 0, "offset": np.arange(len(transactions)),
        "key": [t["user_id"].encode() for t in transactions],
        "value": [json.dumps(t).encode() for t in transactions], "timestamp": ts,
    })


def processor_rates(settings: Settings, defs, ref, fast, size: int, batch: int,
                    progress: Callable[[str], None]) -> dict[str, Any]:
    import redis

    from etl.stream import Processor
    from etl.stream_state import StreamState
    from ingestion.simulator import simulate

    sim = simulate(size, 11, START, 1)
    records = _records(sim.transactions, settings.topics.transactions)
    records = records.sort_values("timestamp", kind="mergesort").reset_index(drop=True)
    out: dict[str, Any] = {}
    for tag, (writer, url) in (("feast", ref), ("fast", fast)):
        client = redis.Redis.from_url(url)
        state = StreamState(client, f"benchw_{uuid.uuid4().hex[:6]}")
        clock = {"now": 0.0}
        proc = Processor(settings, defs.views, state, writer, clock=lambda: clock["now"])
        totals = {"seconds": 0.0, "publish_s": 0.0, "rows_published": 0}
        try:
            for i in range(0, len(records), batch):
                part = records.iloc[i:i + batch]
                clock["now"] = part["timestamp"].max().timestamp() + 1.0  # a job keeping up
                progress(f"processor, {tag} writer: records {i:,}-{i + len(part):,}")
                rep = proc.apply(part.reset_index(drop=True), i // batch)
                totals["seconds"] += rep.seconds
                totals["publish_s"] += rep.publish_s
                totals["rows_published"] += rep.rows_published
        finally:
            state.reset()
        out[tag] = {"records_per_s": round(len(records) / totals["seconds"]),
                    "seconds": round(totals["seconds"], 2), "publish_s": round(totals["publish_s"], 2),
                    "rows_published": totals["rows_published"],
                    "publish_us_per_row": round(totals["publish_s"] / max(1, totals["rows_published"]) * 1e6, 1)}
    out["ratio"] = round(out["fast"]["records_per_s"] / out["feast"]["records_per_s"], 2)
    return out


def run(settings: Settings, size: int = 20_000, repeats: int = 5, processor_size: int = 20_000,
        progress: Callable[[str], None] | None = None, **_: Any) -> dict[str, Any]:
    from skewless.services import redis_server
    from skewless.services.server_process import free_port

    progress = progress or (lambda _m: None)
    base = Path(settings.state_dir) / "bench"
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="writer-", dir=base))
    port = free_port()
    own = settings.model_copy(update={"state_dir": tmp / "redis",
                                      "services": settings.services.model_copy(update={"redis_port": port})})
    redis_server.up(own)
    try:
        work = settings.model_copy(update={"state_dir": tmp / "state"})
        load = [round(x, 2) for x in os.getloadavg()]
        defs, ref, fast = _writers(work, port, f"bw{uuid.uuid4().hex[:6]}")
        rates = writer_rates(defs, ref[0], fast[0], size, repeats, progress)
        same = _same_bytes(port)
        if not same:
            raise AssertionError("the two writers left different bytes in Redis")
        result: dict[str, Any] = {"benchmark": "writer", "rows": size, "repeats": repeats,
                                  "baseline": "Feast provider.ingest_df (skip_dedup)", "same_bytes": same}
        for name, r in rates.items():
            result[f"{name}_feast_rows_per_s"] = r["feast_rows_per_s"]
            result[f"{name}_fast_rows_per_s"] = r["fast_rows_per_s"]
            result[f"{name}_ratio"] = r["ratio"]
            result[f"{name}_cpu_us_per_row"] = f"{r['feast_cpu_us_per_row']} -> {r['fast_cpu_us_per_row']}"
        result["views"] = rates
        if processor_size:
            result["processor"] = processor_rates(work, defs, ref, fast, processor_size, 5_000, progress)
            result["processor_ratio"] = result["processor"]["ratio"]
        result["load_before"] = load
        result["load_after"] = [round(x, 2) for x in os.getloadavg()]
        return result
    finally:
        redis_server.down(own)
