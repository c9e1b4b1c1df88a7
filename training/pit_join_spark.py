"""The point-in-time join for training sets as a Spark job: the same answer as the DuckDB
ASOF join (``training.pit_join``) and Feast's ``get_historical_features``, on
``settings.spark_master`` — for training sets that outgrow one machine.

Same plan as the ASOF join (Feast's registry gives the views, their join keys, features
and offline sources; the service's on-demand transforms run afterwards). The join itself,
for the views sharing one set of join keys: the entity rows and those views' source rows
go into one union, each view's features packed in a struct that is null on every other
row; a window per join key, ordered by time with source rows before entity rows at equal
times, carries each view's latest struct forward (``last(..., ignorenulls)``). An entity
row keeps what it sees: each view's latest row at or before its ``event_timestamp``, or
nulls when the entity has no history. Packing the features in a struct keeps a source
row's own null values (ignorenulls skips only rows of other kinds).
"""

from __future__ import annotations

from functools import reduce
from typing import Any

import pandas as pd

from skewless.settings import Settings
from training.pit_join import ROW, TS, ViewJoin, apply_on_demand, entity_frame, join_plan

KIND = "_kind"  # 0: a source row, 1: an entity row (source rows sort first at equal times)


def _by_keys(joins: list[ViewJoin]) -> dict[tuple[str, ...], list[ViewJoin]]:
    groups: dict[tuple[str, ...], list[ViewJoin]] = {}
    for j in joins:
        groups.setdefault(j.keys, []).append(j)
    return groups


def _latest(spark: Any, entities: Any, keys: tuple[str, ...], joins: list[ViewJoin], until: Any) -> Any:
    """Per entity row (``_row``): each view's latest features at or before its time."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    parts = [entities.select(*keys, TS, ROW, F.lit(1).alias(KIND))]
    for j in joins:
        src = spark.read.option("mergeSchema", "true").parquet(j.path)  # like union_by_name
        known = reduce(lambda a, b: a & b, [F.col(k).isNotNull() for k in keys], F.col(TS) <= F.lit(until))
        parts.append(src.where(known).select(*keys, TS, F.lit(0).alias(KIND),
                                             F.struct(*j.features).alias(j.prefix)))
    rows = reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), parts)
    upto_here = (Window.partitionBy(*keys).orderBy(TS, KIND)
                 .rowsBetween(Window.unboundedPreceding, Window.currentRow))
    seen = rows.select(ROW, KIND, *[F.last(j.prefix, ignorenulls=True).over(upto_here).alias(j.prefix)
                                    for j in joins])
    return seen.where(F.col(KIND) == 1).select(
        ROW, *[F.col(j.prefix)[f].alias(j.column(f)) for j in joins for f in j.features])


def _to_pandas(df: Any) -> pd.DataFrame:
    """Through Arrow, with DuckDB's types: an integer column with nulls is pandas' Int64."""
    import pyarrow as pa

    out = df.toArrow().to_pandas(types_mapper={pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int32Dtype()}.get)
    for col in out.columns:
        dtype = out[col].dtype
        if isinstance(dtype, pd.core.arrays.integer.IntegerDtype) and not out[col].isna().any():
            out[col] = out[col].astype(dtype.numpy_dtype)
    return out


def historical_features(store: Any, service_name: str, rows: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    from skewless.spark import spark_session

    joins, odfvs = join_plan(store, service_name)
    entities = entity_frame(rows)
    spark = spark_session(settings, app="skewless-pit")
    keys = list(dict.fromkeys(k for j in joins for k in j.keys))
    spark_entities = spark.createDataFrame(entities[[ROW, TS, *keys]])
    until = entities[TS].max().to_pydatetime() if len(entities) else pd.Timestamp(0, tz="UTC").to_pydatetime()
    out = entities
    for key_set, group in _by_keys(joins).items():
        out = out.merge(_to_pandas(_latest(spark, spark_entities, key_set, group, until)), on=ROW, how="left")
    # The ASOF join's column order: the entity columns, then every view's features in the service's order.
    out = out[[*entities.columns, *(j.column(f) for j in joins for f in j.features)]]
    return apply_on_demand(out, odfvs, joins)
