"""Time slices of an offline table for a materialization in bounded memory.

Feast's local engine materializes a view by pulling every offline row in [start, end]
into memory, keeping each entity's latest, and writing those: its peak memory grows with
the rows in the range (~150 bytes a row measured at 1M events, 12M feature rows: ~2 GB).
Materializing the range as consecutive time slices [b0, b1], [b1, b2], ... [bk-1, bk]
(b0 = start, bk = end), each with at most ``max_rows`` rows, bounds it by the slice.

Why the online values come out the same: each slice writes, per entity, the latest row
within the slice; the slices go in time order and every write replaces the stored value
(``skip_dedup`` on Redis; SQLite upserts), so after the last slice an entity holds its
latest row in any slice that had one — its latest row in [start, end], what one unsliced
pass writes. A row exactly on a boundary is in both slices (Feast's range is inclusive at
both ends): written twice, harmlessly. Slicing by entity key would bound memory too, but
Feast's pull reads a whole source; time is the one dimension its API filters on.

The slices are planned from the table's row counts per hour (one streaming DuckDB
aggregate over the timestamp column): an hour is never split, so a slice can exceed
``max_rows`` only when one hour alone does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class Slice:
    start: datetime
    end: datetime
    rows: int  # offline rows with start <= timestamp < end (the last slice: <= end)


def hourly_counts(path: str, timestamp_field: str, start: datetime, end: datetime) -> list[tuple[datetime, int]]:
    """(hour, rows) of the Parquet table under ``path`` with ``start <= ts <= end``, by hour."""
    import duckdb

    glob = f"{path.rstrip('/')}/**/*.parquet"
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        try:
            rows = con.execute(
                f"SELECT date_trunc('hour', CAST(\"{timestamp_field}\" AS TIMESTAMP)) AS h, count(*) "
                f"FROM read_parquet(?, hive_partitioning = false) "
                f"WHERE CAST(\"{timestamp_field}\" AS TIMESTAMP) BETWEEN ? AND ? GROUP BY h ORDER BY h",
                [glob, _naive(start), _naive(end)]).fetchall()
        except duckdb.IOException:
            return []  # no file yet: nothing to slice
    finally:
        con.close()
    return [(h.replace(tzinfo=timezone.utc), int(n)) for h, n in rows]


def plan(counts: list[tuple[datetime, int]], start: datetime, end: datetime, max_rows: int) -> list[Slice]:
    """Consecutive slices covering [start, end] exactly, each of at most ``max_rows`` rows
    (bar a single hour holding more), cut at hour starts. Always at least one slice, so
    the whole range is recorded as materialized even where it holds no rows."""
    if max_rows < 1:
        raise ValueError("max_rows must be >= 1")
    bounds, sizes, acc = [start], [], 0
    for hour, n in counts:
        if acc and acc + n > max_rows and start < hour < end:
            bounds.append(hour)
            sizes.append(acc)
            acc = 0
        acc += n
    bounds.append(end)
    sizes.append(acc)
    return [Slice(a, b, n) for a, b, n in zip(bounds, bounds[1:], sizes)]


def _naive(t: datetime) -> datetime:
    """UTC without tzinfo: how Feast's DuckDB store compares (``CAST(ts AS TIMESTAMP)``)."""
    return (t.astimezone(timezone.utc) if t.tzinfo else t).replace(tzinfo=None)
