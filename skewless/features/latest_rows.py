"""Materialization in bounded memory: each feature view's latest row per entity, found by
DuckDB out of core, converted and written in batches through Feast's own write path.

Feast's local engine (``FeatureStore.materialize``) pulls every offline row in [start, end]
into memory (Arrow, then pandas), keeps each entity's latest, and converts all of those to
Python protobuf objects before one write: its peak grows with the rows and the keys
(measured: 2.1 GB at 1M events, 12M feature rows, 333k keys; ~18 GB estimated at 10M).

Here, per view:

1. DuckDB (a database file in a temporary directory, ``materialize.duckdb_memory`` of
   memory, spilling the rest to disk) keeps each entity's latest row in [start, end] —
   Feast's semantics: ``start <= ts <= end``, the latest ``ts`` per join key — in a table;
2. that table is streamed in slices of ``materialize.batch_rows`` entities (a slice of the
   entity keys at a time), each converted by Feast (``_convert_arrow_to_proto``, what its
   engine calls) and written with the online store's ``online_write_batch``;
3. the interval is recorded in the registry as Feast records it.

Each entity is written once (time slices would rewrite an entity in every slice where it
has rows: measured 4x the writes of one pass for ``user_spend`` at 1M events, and growing
with N). Peak memory: DuckDB's limit, plus one slice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from skewless.bounded_duckdb import BoundedDuckDB


@dataclass
class ViewLoad:
    """One view's deduplicated rows, ready to stream (``table`` in ``con``)."""

    view: Any  # feast.FeatureView
    table: str
    rows: int  # offline rows in [start, end]
    keys: int  # entities with a row there: what is written


class LatestRows:
    """``with LatestRows(tmp_dir, memory) as lr: load = lr.prepare(fv, start, end); lr.write(...)``."""

    def __init__(self, tmp_parent: Path, memory_limit: str) -> None:
        self._db = BoundedDuckDB(tmp_parent, memory_limit, prefix="materialize-", file_backed=True)
        self.dir, self.con = self._db.dir, self._db.con

    def prepare(self, view, start: datetime, end: datetime) -> ViewLoad:
        """Each entity's latest row of ``view`` with ``start <= ts <= end``, into a table."""
        import duckdb

        src = view.batch_source
        path = getattr(src, "path", None)
        if not path:
            raise ValueError(f"feature view {view.name} has no file source")
        ts = src.timestamp_field
        keys = [c.name for c in view.entity_columns]
        cols = [*keys, *[f.name for f in view.features], ts]
        table = f"latest_{len(self.con.execute('SHOW TABLES').fetchall())}"
        q = ", ".join(f'"{c}"' for c in cols)
        by = ", ".join(f'"{k}"' for k in keys)
        glob = f"{path.rstrip('/')}/**/*.parquet"
        where = f'CAST("{ts}" AS TIMESTAMP) BETWEEN ? AND ?'
        try:
            rows = self.con.execute(f"SELECT count(*) FROM read_parquet(?, hive_partitioning = false) WHERE {where}",
                                    [glob, _naive(start), _naive(end)]).fetchall()[0][0]
            # The latest row per entity (ties: the last in Feast's order is as arbitrary).
            self.con.execute(
                f"CREATE TABLE {table} AS SELECT {q} FROM read_parquet(?, hive_partitioning = false) "
                f'WHERE {where} QUALIFY row_number() OVER (PARTITION BY {by} ORDER BY "{ts}" DESC) = 1',
                [glob, _naive(start), _naive(end)])
        except duckdb.IOException as exc:
            if "No files found" in str(exc):
                return ViewLoad(view, "", 0, 0)  # the view has no offline table yet
            raise
        keys_n = self.con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
        return ViewLoad(view, table, int(rows), int(keys_n))

    def write(self, config, online_store, load: ViewLoad, batch_rows: int,
              on_rows: Callable[[int], None] | None = None) -> int:
        """Stream the view's table to the online store, ``batch_rows`` entities at a time."""
        from feast.utils import _convert_arrow_to_proto

        if not load.table or not load.keys:
            return 0
        view = load.view
        join_keys = {e.name: e.dtype.to_value_type() for e in view.entity_columns}
        written = 0
        reader = self.con.sql(f"SELECT * FROM {load.table}").to_arrow_reader(batch_rows)
        for batch in reader:
            if batch.num_rows == 0:
                continue
            rows = _convert_arrow_to_proto(batch, view, join_keys)
            online_store.online_write_batch(config=config, table=view, data=rows, progress=None)
            written += batch.num_rows
            if on_rows:
                on_rows(batch.num_rows)
        self.con.execute(f"DROP TABLE {load.table}")
        return written

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "LatestRows":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _naive(t: datetime) -> datetime:
    """UTC without tzinfo: how Feast's DuckDB store compares (``CAST(ts AS TIMESTAMP)``)."""
    return (t.astimezone(timezone.utc) if t.tzinfo else t).replace(tzinfo=None)
