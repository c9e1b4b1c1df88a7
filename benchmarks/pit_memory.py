"""Peak memory of the training set's ASOF join (``training.pit_join``): DuckDB bounded by
``training.duckdb_memory`` vs unbounded (DuckDB's default: 80% of RAM), side by side.

    python -m benchmarks.pit_memory [--rows 60000000] [--keys 3000000] [--entities 1000000]
                                    [--limits before,none,1GB] [--dir DIR] [--json]

A synthetic offline table shaped like the largest view at 10M events (``user_merchant``:
(user_id, merchant_id) keys, 2.8M of them, ~40M rows; 30 days) — ``--rows`` rows over
``--keys`` keys, three features — and ``--entities`` entity rows at random times; made once
with DuckDB under ``--dir`` (kept for the next run). Each limit joins them in a fresh spawned
process through ``training.pit_join.join_views`` (the engine's own join) and reports its
wall time and peak RSS (VmHWM); the results must be equal across limits. ``before``: the
engine before the bound (DuckDB's default limit, 80% of RAM, and no key filter: every row of
the view enters the join); ``none``: the key filter, DuckDB's default limit; ``1GB`` etc.:
the key filter in ``BoundedDuckDB`` (what training runs, ``training.duckdb_memory``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.child import in_child, peak_rss_mb

VIEW = "pit_memory_view"


def join_unbounded(entities, joins: list, key_filter: bool = False):
    """``training.pit_join.join_views`` on a DuckDB connection as the engine opened it before
    ``training.duckdb_memory`` (DuckDB's default limit, 80% of RAM; UTC); ``key_filter``
    False: also as before the key filter. The baseline here and in ``bench scale``."""
    import duckdb

    from training.pit_join import join_views

    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        return join_views(con, entities, joins, key_filter=key_filter)
    finally:
        con.close()


def frame_digest(frame) -> str:
    """An order-independent digest of a frame's values (equal frames, equal digests)."""
    import pandas as pd

    hashed = pd.util.hash_pandas_object(frame[sorted(frame.columns)], index=False).to_numpy()
    return f"{int(hashed.astype('uint64').sum(dtype='uint64')):016x}"


def make_data(root: Path, rows: int, keys: int, entities: int) -> Path:
    import duckdb

    data = root / f"r{rows}-k{keys}-e{entities}"
    if (data / "done").exists():
        return data
    (data / VIEW).mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    users = max(1, keys // 15)
    key = "'u' || (k % {u}) AS user_id, 'm' || (k // {u}) AS merchant_id".format(u=users)
    con.execute(
        f"COPY (SELECT {key}, TIMESTAMPTZ '2026-03-01 00:00:00+00' + to_microseconds((hash(i) % 2592000000000)::BIGINT)"
        f" AS event_timestamp, (hash(i * 3) % 100000) / 100.0 AS amount_sum, (i % 97)::BIGINT AS tx_count,"
        f" (hash(i * 5) % 1000) / 10.0 AS amount_max FROM (SELECT i, i % {keys} AS k FROM range({rows}) t(i)))"
        f" TO '{data / VIEW}' (FORMAT parquet, PER_THREAD_OUTPUT true)")
    con.execute(
        f"COPY (SELECT {key}, TIMESTAMPTZ '2026-03-01 00:00:00+00' + to_microseconds((hash(i * 7) % 2592000000000)"
        f"::BIGINT) AS event_timestamp FROM (SELECT i, (hash(i) % {keys})::BIGINT AS k FROM range({entities}) t(i)))"
        f" TO '{data / 'entities.parquet'}' (FORMAT parquet)")
    (data / "done").write_text("")
    return data


def _join(data: str, limit: str, out) -> None:
    import pandas as pd

    from skewless.bounded_duckdb import BoundedDuckDB
    from training.pit_join import ViewJoin, entity_frame, join_views

    entities = entity_frame(pd.read_parquet(Path(data) / "entities.parquet"))
    joins = [ViewJoin("user_merchant", ("user_id", "merchant_id"), ("amount_sum", "tx_count", "amount_max"),
                      str(Path(data) / VIEW))]
    t0 = time.perf_counter()
    if limit in ("none", "before"):  # DuckDB's default limit; "before": nor the key filter, as before the bound
        frame = join_unbounded(entities, joins, key_filter=limit == "none")
    else:
        with BoundedDuckDB(Path(tempfile.gettempdir()), limit, prefix="pit-memory-") as db:
            frame = join_views(db.con, entities, joins)
    seconds = time.perf_counter() - t0
    digest = frame_digest(frame)
    out.put({"limit": limit, "seconds": round(seconds, 1), "peak_rss_mb": round(peak_rss_mb() or 0),
             "rows": len(frame), "matched": int(frame["user_merchant__tx_count"].notna().sum()),
             "digest": digest})


def run(rows: int, keys: int, entities: int, limits: list[str], root: Path) -> dict:
    t0 = time.perf_counter()
    data = make_data(root, rows, keys, entities)
    made = time.perf_counter() - t0
    runs = []
    for limit in limits:
        r = in_child(_join, str(data), limit, timeout_s=3600)
        print(f"limit {limit:>6}: {r['seconds']:7.1f} s, peak {r['peak_rss_mb']:6,} MB, "
              f"{r['matched']:,} of {r['rows']:,} rows matched", file=sys.stderr)
        runs.append(r)
    equal = len({r["digest"] for r in runs}) == 1
    return {"benchmark": "pit_memory", "rows": rows, "keys": keys, "entities": entities,
            "data_seconds": round(made, 1), "runs": runs, "equal_results": equal}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=60_000_000)
    ap.add_argument("--keys", type=int, default=3_000_000)
    ap.add_argument("--entities", type=int, default=1_000_000)
    ap.add_argument("--limits", default="before,none,1GB")
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "skewless-pit-memory")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    result = run(a.rows, a.keys, a.entities, [x.strip() for x in a.limits.split(",")], a.dir)
    if a.json:
        print(json.dumps(result))
    return 0 if result["equal_results"] else 1


if __name__ == "__main__":
    sys.exit(main())
