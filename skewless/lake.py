"""Read a topic's events back from the lake: the same rows, columns and types in every engine.

The sink lays a topic out as ``raw/<topic>/date=YYYY-MM-DD/hour=HH/*.parquet`` (event
time, UTC; ``hour`` zero-padded; the paths are ``skewless.lake_layout``'s), and files
written under different contract versions hold different columns (``mcc``, added by
transactions v2, is absent from v1 files). The engines' defaults disagree on both:
DuckDB reads ``hour=05`` as text, Spark and pyarrow as an integer (and pyarrow ``date``
as text); Spark (without ``mergeSchema``) and DuckDB (without ``union_by_name``) take one
file's columns and silently drop the columns only other files have. So every reader of
the lake states both, the same way:

* partitions: ``date`` a date, ``hour`` a 32-bit integer (``PARTITIONS``);
* columns: the topic's contract, every version's fields (``topic_schema``); a file
  that lacks an optional column reads it as null.

The one setting per engine (``tests/integration/test_lake_readers.py`` reads one lake
with all three and gets the same rows, columns and types):

* pyarrow: ``dataset(lake_path, topic, contract)`` below (``read_events`` uses it);
* Spark: ``spark.read.schema(<topic_schema as Spark>).option("basePath", root)
  .parquet(root)``, as ``etl.batch.read_raw`` does (no footer is opened to plan it);
* DuckDB: ``duckdb_source(lake_path, topic)``, i.e. ``read_parquet(... ,
  hive_partitioning = true, union_by_name = true, hive_types = {'date': DATE, 'hour':
  INTEGER})``. ``union_by_name`` yields the columns some file has: an optional field
  that no event carried yet is absent there, where the other two show it as null.

Files whose names start with ``.`` or ``_`` (temp files, manifests) are never rows.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from skewless.lake_layout import LakeLayout

if TYPE_CHECKING:
    from skewless.contracts import Contract

# The partition columns of raw topics, typed (the directory names are text).
PARTITIONS = pa.schema([pa.field("date", pa.date32()), pa.field("hour", pa.int32())])
PARTITIONING = ds.partitioning(PARTITIONS, flavor="hive")

# Which copy of an event is "the first landed" (see Contract.id_field): the least of
# these. ``_ingested_at`` is when the sink landed the copy's batch, stamped once and
# stored in the file, so every reader (full run, incremental run, streaming) orders the
# same copies the same way, and a copy landed later never displaces one counted before;
# within one batch (one stamp) the Kafka offset, across partitions landed in the same
# microsecond the partition, break the tie.
LANDING_ORDER = ("_ingested_at", "_kafka_partition", "_kafka_offset")


def landed_at(path: Path) -> float:
    """When a lake file appeared under its final name (unix time): the sink writes a temp
    file and renames it, and a rename updates ctime (not mtime) — so a file written before
    a run started but renamed into place during it counts as landed after the start (the
    ETL's incremental planning and the served-consistency coverage both ask this)."""
    st = path.stat()
    return max(st.st_mtime, st.st_ctime)


def topic_schema(contract: Contract) -> pa.Schema:
    """The one schema of a topic's rows in the lake: the contract's fields (every
    version's), the Kafka columns, then the typed partitions."""
    schema = contract.arrow_schema()
    for f in PARTITIONS:
        schema = schema.append(f)
    return schema


def duckdb_source(lake_path: str, topic: str) -> str:
    """A DuckDB table expression for the topic's rows, typed as the other readers type them:
    ``SELECT ... FROM <this>``."""
    glob = LakeLayout(lake_path).raw_glob(topic).replace("'", "''")
    types = ", ".join(f"'{f.name}': {_DUCKDB_TYPES[f.type]}" for f in PARTITIONS)
    return f"read_parquet('{glob}', hive_partitioning = true, union_by_name = true, hive_types = {{{types}}})"


_DUCKDB_TYPES = {pa.date32(): "DATE", pa.int32(): "INTEGER"}


def dataset(lake_path: str, topic: str, contract: Contract | None = None) -> ds.Dataset | None:
    """The topic's rows as a pyarrow dataset (None if nothing landed). Columns: the
    contract's (``topic_schema``), or without one the union of every file's."""
    root = LakeLayout(lake_path).raw_dir(topic)
    if not root.is_dir():
        return None
    found = ds.dataset(str(root), format="parquet", partitioning=PARTITIONING)
    if not found.files:
        return None
    if contract is not None:
        schema = topic_schema(contract)
    else:  # read every footer and unify
        schema = pa.unify_schemas([pq.read_schema(f) for f in found.files] + [PARTITIONS])
    return ds.dataset(found.files, schema=schema, format="parquet", partitioning=PARTITIONING,
                      partition_base_dir=str(root))


def read_events(
    lake_path: str,
    topic: str,
    time_col: str,
    start: datetime | None = None,
    end: datetime | None = None,
    columns: list[str] | None = None,
    contract: Contract | None = None,
) -> pa.Table:
    """Rows of ``topic`` with ``start <= time_col < end`` (either bound optional).

    Every landed copy is returned: an event a producer retried is there twice (under
    two offsets). Counting once per ``contract.id_field`` (the first landed, by
    ``LANDING_ORDER``) is the reader's to do."""
    dataset_ = dataset(lake_path, topic, contract)
    if dataset_ is None:
        return pa.table({})
    flt = None
    if start is not None:
        flt = ds.field("date") >= (start - timedelta(days=1)).date()
        flt &= ds.field(time_col) >= pa.scalar(start, pa.timestamp("us", tz="UTC"))
    if end is not None:
        f2 = (ds.field("date") <= end.date()) & (ds.field(time_col) < pa.scalar(end, pa.timestamp("us", tz="UTC")))
        flt = f2 if flt is None else flt & f2
    cols = [c for c in columns if c in dataset_.schema.names] if columns else None
    return dataset_.to_table(columns=cols, filter=flt)
