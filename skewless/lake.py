"""Read a topic's events back from the lake (pyarrow; Spark jobs read it with Spark).

Partition pruning by the ``date=`` directories; files whose names start with ``.`` or
``_`` (temp files, manifests) are ignored; schemas of different contract versions are
unified (a column missing from older files reads as null).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq


def read_events(
    lake_path: str,
    topic: str,
    time_col: str,
    start: datetime | None = None,
    end: datetime | None = None,
    columns: list[str] | None = None,
) -> pa.Table:
    """Rows of ``topic`` with ``start <= time_col < end`` (either bound optional)."""
    root = Path(lake_path) / "raw" / topic
    if not root.is_dir():
        return pa.table({})
    part = ds.partitioning(pa.schema([("date", pa.string()), ("hour", pa.string())]), flavor="hive")
    files = ds.dataset(str(root), format="parquet", partitioning=part).files
    if not files:
        return pa.table({})
    # Contract versions differ in optional columns: read every footer and unify.
    schema = pa.unify_schemas([pq.read_schema(f) for f in files])
    dataset = ds.dataset(str(root), format="parquet", partitioning=part, schema=_with_partitions(schema))
    flt = None
    if start is not None:
        flt = ds.field("date") >= (start - timedelta(days=1)).strftime("%Y-%m-%d")
        flt &= ds.field(time_col) >= pa.scalar(start, pa.timestamp("us", tz="UTC"))
    if end is not None:
        f2 = (ds.field("date") <= end.strftime("%Y-%m-%d")) & (ds.field(time_col) < pa.scalar(end, pa.timestamp("us", tz="UTC")))
        flt = f2 if flt is None else flt & f2
    cols = [c for c in columns if c in dataset.schema.names] if columns else None
    return dataset.to_table(columns=cols, filter=flt)


def _with_partitions(schema: pa.Schema) -> pa.Schema:
    for name in ("date", "hour"):
        if name not in schema.names:
            schema = schema.append(pa.field(name, pa.string()))
    return schema
