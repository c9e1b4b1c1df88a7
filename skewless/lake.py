"""Read a topic's events back from the lake: the same rows, columns and types in every engine.

The sink lays a topic out as ``raw/<topic>/date=YYYY-MM-DD/*.parquet`` (event date,
UTC; the paths are ``skewless.lake_layout``'s), and files written under different
contract versions hold different columns (``mcc``, added by transactions v2, is absent
from v1 files). The engines' defaults disagree on both: pyarrow reads ``date`` as text
where Spark and DuckDB read a date; Spark (without ``mergeSchema``) and DuckDB (without
``union_by_name``) take one file's columns and silently drop the columns only other
files have. So every reader of the lake states both, the same way:

* partitions: ``date`` a date (``PARTITIONS``);
* columns: the topic's contract, every version's fields (``topic_schema``); a file
  that lacks an optional column reads it as null.

And every reader reads the explicit file list ``LakeLayout.raw_files`` gives (never a
directory or a glob): a compaction's inputs and its output are both on disk for a while,
and only that list says which of them hold the rows.

The one setting per engine (``tests/integration/test_lake_readers.py`` reads one lake
with all three and gets the same rows, columns and types):

* pyarrow: ``dataset(lake_path, topic, contract)`` below (``read_events`` uses it);
* Spark: ``spark.read.schema(<topic_schema as Spark>).option("basePath", root)
  .parquet(*files)``, as ``etl.batch.read_raw`` does (no footer is opened to plan it);
* DuckDB: ``duckdb_source(lake_path, topic)``, i.e. ``read_parquet([files],
  hive_partitioning = true, union_by_name = true, hive_types = {'date': DATE})``.
  ``union_by_name`` yields the columns some file has: an optional field that no event
  carried yet is absent there, where the other two show it as null.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from skewless.errors import DataError
from skewless.lake_layout import LakeLayout, landed_at  # noqa: F401 - landed_at: re-exported


if TYPE_CHECKING:
    from skewless.contracts import Contract

# The partition columns of raw topics, typed (the directory names are text).
PARTITIONS = pa.schema([pa.field("date", pa.date32())])
PARTITIONING = ds.partitioning(PARTITIONS, flavor="hive")

# Which copy of an event is "the first landed" (see Contract.id_field): the least of
# these. ``_ingested_at`` is when the sink landed the copy's batch, stamped once and
# stored in the file, so every reader (full run, incremental run, streaming) orders the
# same copies the same way, and a copy landed later never displaces one counted before;
# within one batch (one stamp) the Kafka offset, across partitions landed in the same
# microsecond the partition, break the tie.
LANDING_ORDER = ("_ingested_at", "_kafka_partition", "_kafka_offset")


def topic_schema(contract: Contract) -> pa.Schema:
    """The one schema of a topic's rows in the lake: the contract's fields (every
    version's), the Kafka columns, then the typed partitions."""
    schema = contract.arrow_schema()
    for f in PARTITIONS:
        schema = schema.append(f)
    return schema


def duckdb_source(lake_path: str, topic: str) -> str:
    """A DuckDB table expression for the topic's rows, typed as the other readers type them:
    ``SELECT ... FROM <this>`` (the files listed now: build it again to see later ones)."""
    files = [str(f.path) for f in LakeLayout(lake_path).raw_files(topic)]
    if not files:
        raise DataError(f"no rows of topic {topic} in the lake at {lake_path}", "land some with: skewless ingest consume")
    listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    types = ", ".join(f"'{f.name}': {_DUCKDB_TYPES[f.type]}" for f in PARTITIONS)
    return f"read_parquet([{listed}], hive_partitioning = true, union_by_name = true, hive_types = {{{types}}})"


_DUCKDB_TYPES = {pa.date32(): "DATE", pa.int32(): "INTEGER"}


def dataset(lake_path: str, topic: str, contract: Contract | None = None) -> ds.Dataset | None:
    """The topic's rows as a pyarrow dataset (None if nothing landed). Columns: the
    contract's (``topic_schema``), or without one the union of every file's."""
    layout = LakeLayout(lake_path)
    files = [str(f.path) for f in layout.raw_files(topic)]
    if not files:
        return None
    if contract is not None:
        schema = topic_schema(contract)
    else:  # read every footer and unify
        schema = pa.unify_schemas([pq.read_schema(f) for f in files] + [PARTITIONS])
    return ds.dataset(files, schema=schema, format="parquet", partitioning=PARTITIONING,
                      partition_base_dir=str(layout.raw_dir(topic)))


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
