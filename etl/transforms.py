"""Windowed aggregations as Spark DataFrame transformations (no I/O).

Implements the semantics in ``skewless.features.dsl``: rows at the hop boundaries where
a view's aggregates change, each holding the aggregates over ``[b - w, b)``.

How: events are first reduced to per-(entity, hop bucket) partials (count, sum, min,
max, value sets, latest value); a boundary ``b`` sees bucket ``k`` in window ``w`` iff
``b - w/h <= k < b`` (in hop units), which is exact because windows are multiples of
the hop. Change points are ``k + 1`` (enter) and ``k + w/h + 1`` (leave) for every
bucket and window.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from skewless.features.dsl import EventSource, WindowedView

TS = "event_timestamp"


def _hop_us(view: WindowedView) -> int:
    return int(view.hop_td.total_seconds() * 1_000_000)


def _hops(view: WindowedView, window) -> int:
    return int(window.total_seconds() * 1_000_000) // _hop_us(view)


def source_events(source: EventSource, frames: dict[str, DataFrame]) -> DataFrame:
    """The source's events: its contract's frame, filtered and enriched as declared."""
    df = frames[source.contract]
    if source.where:
        df = df.where(F.col(source.where))
    if source.enrich:
        contract, key, columns = source.enrich
        other = frames[contract].select(key, *columns).dropDuplicates([key])
        df = df.join(other, on=key, how="inner")
    return df.withColumnRenamed(source.time_column, "_ts")


def bucket_partials(view: WindowedView, events: DataFrame) -> DataFrame:
    """Per (entity, hop bucket): the partial aggregates every window needs."""
    keys = view.join_keys
    hop = _hop_us(view)
    ev = events.withColumn("_bucket", F.floor(F.unix_micros("_ts") / F.lit(hop)).cast("long"))
    aggs = [F.count(F.lit(1)).alias("_n"), F.max("_ts").alias("_last_ts")]
    for a in view.aggregations:
        c = a.column
        if a.function in ("sum", "mean"):
            aggs.append(F.sum(F.col(c).cast("double")).alias(f"_sum_{c}"))
        elif a.function == "min":
            aggs.append(F.min(F.col(c).cast("double")).alias(f"_min_{c}"))
        elif a.function == "max":
            aggs.append(F.max(F.col(c).cast("double")).alias(f"_max_{c}"))
        elif a.function == "distinct_count":
            aggs.append(F.collect_set(c).alias(f"_set_{c}"))
        elif a.function == "last":
            aggs.append(F.max_by(F.col(c), F.col("_ts")).alias(f"_last_{c}"))
    # The same partial may be asked for by several windows: keep one of each.
    unique = {}
    for col in aggs:
        unique.setdefault(col._jc.toString(), col)
    return ev.groupBy(*keys, "_bucket").agg(*unique.values())


def change_points(view: WindowedView, partials: DataFrame) -> DataFrame:
    """Boundaries (in hop units) where some aggregate of the view changes."""
    offsets = sorted({1} | {_hops(view, a.window_td) + 1 for a in view.aggregations})
    return (partials.select(*view.join_keys, F.explode(F.array(*[F.col("_bucket") + F.lit(o) for o in offsets])).alias("_b"))
            .distinct())


def _within(view: WindowedView, window) -> Column:
    return F.col("_bucket") >= F.col("_b") - F.lit(_hops(view, window))


def windowed_features(view: WindowedView, events: DataFrame) -> DataFrame:
    """The view's offline table: (join keys..., event_timestamp, features...)."""
    keys = view.join_keys
    partials = bucket_partials(view, events)
    boundaries = change_points(view, partials)
    longest = _hops(view, view.max_window)
    # A left join: a boundary where the last event leaves has no bucket left in any
    # window, and still needs its row (the values decay to 0 there).
    p = partials.alias("p")
    b = boundaries.alias("b")
    on = [F.col(f"b.{k}") == F.col(f"p.{k}") for k in keys] + [
        F.col("p._bucket") < F.col("b._b"), F.col("p._bucket") >= F.col("b._b") - F.lit(longest)]
    joined = b.join(p, on=on, how="left").select("b.*", *[F.col(f"p.{c}") for c in partials.columns if c not in keys])
    outs = []
    for a in view.aggregations:
        inside = _within(view, a.window_td)
        c = a.column
        n = F.sum(F.when(inside, F.col("_n")).otherwise(0))
        if a.function == "count":
            col = n.cast("long")
        elif a.function == "sum":
            col = F.coalesce(F.sum(F.when(inside, F.col(f"_sum_{c}"))), F.lit(0.0))
        elif a.function == "mean":
            col = F.sum(F.when(inside, F.col(f"_sum_{c}"))) / F.when(n > 0, n)
        elif a.function == "min":
            col = F.min(F.when(inside, F.col(f"_min_{c}")))
        elif a.function == "max":
            col = F.max(F.when(inside, F.col(f"_max_{c}")))
        elif a.function == "distinct_count":
            col = F.size(F.array_distinct(F.flatten(F.collect_list(F.when(inside, F.col(f"_set_{c}")))))).cast("long")
        elif a.function == "last":
            col = F.max(F.when(inside, F.struct(F.col("_last_ts"), F.col(f"_last_{c}"))))[f"_last_{c}"]
        elif a.function == "last_time":
            col = F.max(F.when(inside, F.unix_micros(F.col("_last_ts")))) / F.lit(1e6)
        else:
            raise ValueError(f"unknown aggregation {a.function}")
        outs.append(col.alias(a.feature_name))
    table = joined.groupBy(*keys, "_b").agg(*outs)
    return table.withColumn(TS, F.timestamp_micros(F.col("_b") * F.lit(_hop_us(view)))).drop("_b")
