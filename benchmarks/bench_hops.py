"""What a view's hop costs the offline table: rows per event, rows, per-hop partials (what
the streaming job keeps per entity), the window code's seconds and the table's bytes, for
every view of ``feature_repo`` at its declared hop and at the other candidate hops, on the
same simulated events — and one Spark ``run_batch`` pair: the declared hops against
``BASELINE`` (the hops before issue 11), same lake, same run.

A view's table has a row per *change point* (an event's bucket entering the windows, and
leaving each of them), not per hop boundary: a finer hop adds rows only where coarser
buckets would have merged several events of one entity. So the cost grows with how many
events an entity has per hop, i.e. with per-entity density: ``days`` sets it (the
simulator grows users and merchants with the event count, so ``size`` alone does not).

The window code is ``etl.windows.events_rows`` — the function the batch job runs per
entity group in Spark — here on all entities at once in one process. Bytes: the rows
written as the batch job writes them (Parquet, zstd, a file per date, sorted by keys and
time).
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from skewless.features.dsl import WindowedView
from skewless.settings import Settings

START = datetime(2026, 3, 1, tzinfo=timezone.utc)
CANDIDATES = ("250ms", "1s", "1m", "5m", "1h")
# The hops before issue 11 (streaming): the baseline of the Spark pair.
BASELINE = {"user_spend": "1m", "user_diversity": "1m", "user_merchant": "1m",
            "merchant_activity": "5m", "merchant_chargebacks": "1h"}


def source_frames(transactions: list[dict], labels: list[dict]) -> dict[str, pd.DataFrame]:
    """The views' sources as pandas frames (``_ts`` the source's time), one row per event."""
    tx = pd.DataFrame(transactions)
    tx["event_time"] = pd.to_datetime(tx["event_time"], utc=True, format="ISO8601")
    lb = pd.DataFrame(labels, columns=None if labels else ["transaction_id", "is_fraud", "label_time"])
    lb["label_time"] = pd.to_datetime(lb["label_time"], utc=True, format="ISO8601")
    return {"transactions": tx, "labels": lb}


def view_events(view: WindowedView, frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    src = view.source
    df = frames[src.contract]
    if src.where:
        df = df[df[src.where].astype(bool)]
    if src.enrich:
        contract, key, cols = src.enrich
        df = df.merge(frames[contract][[key, *cols]].drop_duplicates(key), on=key, how="inner")
    return df.rename(columns={src.time_column: "_ts"}).reset_index(drop=True)


def table_bytes(view: WindowedView, rows: pd.DataFrame, root: Path) -> int:
    """Bytes of the rows written like the batch job's table (zstd Parquet, a file per date)."""
    out = root / view.name
    out.mkdir(parents=True)
    rows = rows.sort_values([*view.join_keys, "event_timestamp"], kind="mergesort")
    dates = rows["event_timestamp"].dt.strftime("%Y-%m-%d")
    for d, part in rows.groupby(dates.to_numpy(), sort=True):
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), out / f"{d}.parquet", compression="zstd")
    size = sum(p.stat().st_size for p in out.iterdir())
    shutil.rmtree(out)
    return size


def measure(view: WindowedView, events: pd.DataFrame, root: Path, repeats: int) -> dict[str, Any]:
    from etl import windows

    times, rows = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        rows = windows.events_rows(view, events)
        times.append(time.perf_counter() - t0)
    if rows.empty:  # e.g. no chargeback in a short simulation
        return {"events": len(events), "entities": 0, "partials": 0, "max_entity_partials": 0, "rows": 0,
                "rows_per_event": 0.0, "seconds": 0.0, "bytes": 0, "bytes_per_event": 0.0}
    partials = windows.bucket_partials(view, events)
    n = len(events)
    size = table_bytes(view, rows, root)
    per_entity = partials.groupby(view.join_keys, sort=False).size()
    return {"events": n, "entities": len(per_entity),
            "partials": len(partials), "max_entity_partials": int(per_entity.max()),
            "rows": len(rows), "rows_per_event": round(len(rows) / n, 3),
            "seconds": round(statistics.median(times), 2), "bytes": size, "bytes_per_event": round(size / n, 1)}


def _with_hop(view: WindowedView, hop: str) -> WindowedView | None:
    try:
        return replace(view, hop=hop)
    except ValueError:  # a window that is not a multiple of this hop
        return None


def grid(views: tuple[WindowedView, ...], frames: dict[str, pd.DataFrame], root: Path,
         repeats: int) -> list[dict[str, Any]]:
    out = []
    for view in views:
        events = view_events(view, frames)
        for hop in dict.fromkeys((view.hop, BASELINE.get(view.name, view.hop), *CANDIDATES)):
            v = _with_hop(view, hop)
            if v is None:
                continue
            m = measure(v, events, root, repeats)
            out.append({"view": view.name, "hop": hop, "declared": hop == view.hop,
                        "baseline": hop == BASELINE.get(view.name, view.hop), **m})
    return out


def spark_pair(settings: Settings, views: tuple[WindowedView, ...], transactions: list[dict],
               labels: list[dict], root: Path, repeats: int = 2) -> dict[str, Any]:
    """``run_batch`` of the same events with the baseline hops and with the declared ones,
    alternating (baseline, declared, declared, baseline, ...), each in a fresh lake, after a
    small warm-up run (JVM start, code generation); median seconds per side."""
    from benchmarks.lake_writer import land_frame
    from etl.batch import run_batch

    sides = {"baseline": tuple(replace(v, hop=BASELINE.get(v.name, v.hop)) for v in views), "declared": views}
    order = [("warmup", views)]
    for i in range(repeats):
        pair = ["baseline", "declared"] if i % 2 == 0 else ["declared", "baseline"]
        order += [(side, sides[side]) for side in pair]
    out: dict[str, Any] = {side: {"runs_s": []} for side in sides}
    for i, (label, vs) in enumerate(order):
        lake = root / f"{label}-{i}"
        s = settings.model_copy(update={"lake_path": str(lake / "lake"), "state_dir": lake / "state"})
        tx, lb = (transactions[:2000], labels[:50]) if label == "warmup" else (transactions, labels)
        land_frame(s.lake_path, s.topics.transactions, "transactions", tx)
        land_frame(s.lake_path, s.topics.labels, "labels", lb)
        t0 = time.perf_counter()
        summary = run_batch(s, views=vs)
        seconds = time.perf_counter() - t0
        if label != "warmup":
            feats = Path(s.lake_path) / "features"
            out[label]["runs_s"].append(round(seconds, 1))
            out[label].update({
                "rows": {n: v["rows"] for n, v in summary["views"].items()},
                "bytes": {v.name: sum(p.stat().st_size for p in (feats / v.name).rglob("*.parquet")) for v in vs},
                "hops": {v.name: v.hop for v in vs},
            })
        shutil.rmtree(lake, ignore_errors=True)
    for side in sides:
        out[side]["seconds"] = round(statistics.median(out[side]["runs_s"]), 1)
    out["seconds_ratio"] = round(out["declared"]["seconds"] / out["baseline"]["seconds"], 2)
    return out


def run(settings: Settings, size: int = 50_000, days: int = 30, seed: int = 7, repeats: int = 3,
        spark: bool = True, spark_repeats: int = 2, **_: Any) -> dict[str, Any]:
    from ingestion.simulator import simulate
    from skewless.features.definitions import load

    views = load(settings).views
    sim = simulate(size, seed, START, days)
    frames = source_frames(sim.transactions, sim.labels)
    base = Path(settings.state_dir) / "bench"
    base.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="hops-", dir=base))
    try:
        cells = grid(views, frames, root, repeats)
        pair = spark_pair(settings, views, sim.transactions, sim.labels, root, spark_repeats) if spark else None
    finally:
        shutil.rmtree(root, ignore_errors=True)
    before = ", ".join(f"{k} {v}" for k, v in BASELINE.items())
    result: dict[str, Any] = {"benchmark": "hops", "events": size, "days": days, "seed": seed,
                              "baseline": f"the hops before issue 11: {before}"}
    for c in cells:
        tag = f"{c['view']}@{c['hop']}" + ("*" if c["declared"] else "")
        result[tag] = (f"rows/event {c['rows_per_event']}, rows {c['rows']:,}, partials {c['partials']:,}, "
                       f"{c['seconds']} s, {c['bytes']:,} B")
    result["cells"] = cells
    for v in views:
        declared = next(c for c in cells if c["view"] == v.name and c["declared"])
        baseline = next(c for c in cells if c["view"] == v.name and c["baseline"])
        result[f"{v.name}_rows_ratio"] = round(declared["rows"] / max(1, baseline["rows"]), 3)
    if pair:
        result["spark_baseline_s"] = pair["baseline"]["seconds"]
        result["spark_declared_s"] = pair["declared"]["seconds"]
        result["ratio"] = pair["seconds_ratio"]
        result["spark"] = pair
    return result
