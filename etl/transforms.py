"""The batch job's Spark transformations (no I/O): one copy per event id, the views'
sources (filters, enrichment), and each view's table — the window semantics themselves
are ``etl.windows`` (NumPy/pandas), run here per entity group by Spark
(``applyInPandas``) and by the streaming job on its micro-batches: one implementation
of every aggregate for both paths.

Events count once per business id (``Contract.id_field``): ``unique_events`` keeps the
first landed copy of each (``skewless.lake.LANDING_ORDER``) before any view sees them.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from etl import windows
from skewless.contracts import CONTRACTS
from skewless.features.dsl import EventSource, WindowedView
from skewless.lake import LANDING_ORDER

TS = windows.TS


def to_hop(view: WindowedView, ts: datetime) -> int:
    """The first hop boundary (in hop units) at or after ``ts``."""
    us = int(ts.timestamp() * 1_000_000)
    return -(-us // windows.hop_us(view))


def first_landed(events: DataFrame, id_field: str) -> DataFrame:
    """One row per ``id_field``: the copy landed first (least ``LANDING_ORDER``).

    Kafka lands each offset once, but a producer retry without idempotence sends one
    event twice (two offsets, maybe two partitions); every copy after the first is
    dropped, whatever it holds. A total order over columns stored in the files, so every
    run keeps the same copy of the same copies."""
    first = Window.partitionBy(id_field).orderBy(*LANDING_ORDER)
    return events.withColumn("_copy", F.row_number().over(first)).where(F.col("_copy") == 1).drop("_copy")


def unique_events(frames: dict[str, DataFrame]) -> dict[str, DataFrame]:
    """Each contract's frame (keyed by contract name) with one event per its ``id_field``."""
    return {name: first_landed(df, CONTRACTS[name].id_field) for name, df in frames.items()}


def source_events(source: EventSource, frames: dict[str, DataFrame]) -> DataFrame:
    """The source's events: its contract's frame, filtered and enriched as declared
    (``frames`` as ``unique_events`` returns them)."""
    df = frames[source.contract]
    if source.where:
        df = df.where(F.col(source.where))
    if source.enrich:
        contract, key, columns = source.enrich
        other = frames[contract].select(key, *columns).dropDuplicates([key])
        df = df.join(other, on=key, how="inner")
    return df.withColumnRenamed(source.time_column, "_ts")


_SPARK_TYPES = {"int64": T.LongType(), "float64": T.DoubleType(), "string": T.StringType(), "bool": T.BooleanType()}


def row_schema(view: WindowedView, events: DataFrame) -> T.StructType:
    """The view table's schema: join keys (typed as in the events), the row time, features."""
    fields = [events.schema[k] for k in view.join_keys]
    fields.append(T.StructField(TS, T.TimestampType()))
    fields += [T.StructField(a.feature_name, _SPARK_TYPES[a.output_type]) for a in view.aggregations]
    return T.StructType(fields)


def windowed_features(view: WindowedView, events: DataFrame, since: datetime | None = None,
                      until: datetime | None = None) -> DataFrame:
    """The view's offline table: (join keys..., event_timestamp, features...), with only the
    rows whose timestamp is in ``[since, until)`` when given (the events must then reach
    back to ``since - longest window - hop``; older ones are ignored). Spark groups the
    events by entity; ``etl.windows.events_rows`` computes each group's rows."""
    if since is not None:
        events = events.where(F.col("_ts") >= F.lit(since - view.max_window - view.hop_td))
    since_b = to_hop(view, since) if since is not None else None
    until_b = to_hop(view, until) if until is not None else None
    columns = list(dict.fromkeys([*view.join_keys, "_ts", *(a.column for a in view.aggregations if a.column)]))

    keys = view.join_keys

    def rows(batches):
        # Partitions hold whole entities, sorted: each Arrow batch is computed at once (the
        # kernel is vectorized over entities), holding back the last entity, which may go
        # on in the next batch.
        carry = None
        for batch in batches:
            if carry is not None:
                batch = pd.concat([carry, batch], ignore_index=True)
            if batch.empty:
                continue
            last = (batch[keys] == batch[keys].iloc[-1]).all(axis=1)
            carry, done = batch[last], batch[~last]
            if not done.empty:
                yield windows.events_rows(view, done, since_b, until_b)
        if carry is not None and not carry.empty:
            yield windows.events_rows(view, carry, since_b, until_b)

    return (events.select(*columns).repartition(*keys).sortWithinPartitions(*keys)
            .mapInPandas(rows, row_schema(view, events)))
