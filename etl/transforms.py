"""Windowed aggregations as Spark DataFrame transformations (no I/O).

Implements the semantics in ``skewless.features.dsl``: one row per hop boundary ``b``
where some aggregate of the view changes, holding the aggregates over the events in
``[b - w, b)``. Everything is measured in hop units: an event at time ``τ`` falls in
bucket ``k = floor(τ / h)``, and boundary ``b`` sees bucket ``k`` in window ``w`` (``W``
hops) iff ``b - W <= k < b`` — exact, because windows are multiples of the hop. A
bucket's events therefore *enter* every window at ``b = k + 1`` and *leave* window
``W`` at ``b = k + W + 1``: those are the view's change points, its rows.

How (linear in events, no range join): per entity, one ordered sequence of rows sorted
by ``_o``, with boundaries placed between buckets (``_o = 2b - 1``; buckets at ``2k``):

* bucket rows (``_o = 2k``): per-bucket partials (count, exact decimal sums, min, max,
  latest event);
* leave rows (``_o = 2(k + W)``): the bucket's count and sums again, to subtract once
  they left window ``W``;
* distinct-count deltas: +1 when a value starts being present in the window, -1 when it
  stops (a value's occurrences closer than ``W`` hops merge into one presence interval);
* probe rows (``_o = 2b - 1``): the change points, where the values are read.

At a probe, count/sum are cumulative sums of bucket rows minus cumulative sums of leave
rows (exact: decimal), distinct counts are cumulative sums of deltas, last value / last
time are the cumulative latest event (null once it left the window), and min/max look
at the bucket rows of the last ``W`` hops (a sliding frame).

Events count once per business id (``Contract.id_field``): ``unique_events`` keeps the
first landed copy of each (``skewless.lake.LANDING_ORDER``) before any view sees them.

The functions take and return DataFrames and do no I/O: a streaming job can run them on
each micro-batch (``foreachBatch``) over the new events plus the lookback it keeps —
``unique_events`` included, over the same lookback, so a retry is dropped there too.
"""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from skewless.contracts import CONTRACTS
from skewless.features.dsl import Aggregation, EventSource, WindowedView
from skewless.lake import LANDING_ORDER

TS = "event_timestamp"
# Sums are exact (no floating-point drift from subtracting running sums): values with
# up to 9 decimals, 29 integer digits.
EXACT = "decimal(38,9)"


def _hop_us(view: WindowedView) -> int:
    return int(view.hop_td.total_seconds() * 1_000_000)


def _hops(view: WindowedView, window) -> int:
    return int(window.total_seconds() * 1_000_000) // _hop_us(view)


def _to_hop(view: WindowedView, ts: datetime) -> int:
    """The first hop boundary (in hop units) at or after ``ts``."""
    us = int(ts.timestamp() * 1_000_000)
    return -(-us // _hop_us(view))


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


def _name(a: Aggregation) -> str:
    return a.feature_name


def bucket_partials(view: WindowedView, events: DataFrame) -> DataFrame:
    """Per (entity, hop bucket ``_k``): the partial aggregates every window needs."""
    keys = view.join_keys
    ev = events.withColumn("_k", F.floor(F.unix_micros("_ts") / F.lit(_hop_us(view))).cast("long"))
    aggs: dict[str, Column] = {"_n": F.count(F.lit(1)), "_last_ts": F.max("_ts")}
    for a in view.aggregations:
        c = a.column
        if a.function in ("sum", "mean"):
            aggs[f"_sum_{c}"] = F.sum(F.col(c).cast(EXACT))
        elif a.function == "min":
            aggs[f"_min_{c}"] = F.min(F.col(c).cast("double"))
        elif a.function == "max":
            aggs[f"_max_{c}"] = F.max(F.col(c).cast("double"))
        elif a.function == "last":
            # The latest event's value; at equal times, the greatest value (deterministic).
            aggs[f"_last_{c}"] = F.max(F.struct(F.col("_ts").alias("t"), F.col(c).alias("v")))
    return ev.groupBy(*keys, "_k").agg(*[col.alias(name) for name, col in aggs.items()])


def change_points(view: WindowedView, partials: DataFrame) -> DataFrame:
    """Boundaries ``_b`` (in hop units) where some aggregate of the view changes."""
    offsets = sorted({1} | {_hops(view, a.window_td) + 1 for a in view.aggregations})
    return (partials.select(*view.join_keys, F.explode(F.array(*[F.col("_k") + F.lit(o) for o in offsets])).alias("_b"))
            .distinct())


def _leave_rows(view: WindowedView, partials: DataFrame) -> list[DataFrame]:
    """Per additive window W: each bucket's count and sums, at the place it leaves W."""
    out = []
    for w in sorted({_hops(view, a.window_td) for a in view.aggregations if a.function in ("count", "sum", "mean")}):
        cols = [F.col("_n").alias(f"_lv{w}_n")]
        cols += [F.col(f"_sum_{c}").alias(f"_lv{w}_sum_{c}") for c in sorted(
            {a.column for a in view.aggregations if a.function in ("sum", "mean") and _hops(view, a.window_td) == w})]
        out.append(partials.select(*view.join_keys, (F.lit(2) * (F.col("_k") + w)).alias("_o"), *cols))
    return out


def _distinct_deltas(view: WindowedView, a: Aggregation, events: DataFrame) -> DataFrame:
    """+1 where a value starts being present in window W, -1 where it stops."""
    keys, w = view.join_keys, _hops(view, a.window_td)
    hop = _hop_us(view)
    occ = (events.where(F.col(a.column).isNotNull())
           .select(*keys, F.col(a.column).alias("_v"), F.floor(F.unix_micros("_ts") / F.lit(hop)).cast("long").alias("_k"))
           .distinct())
    by_value = Window.partitionBy(*keys, "_v").orderBy("_k")
    occ = occ.withColumn("_prev", F.lag("_k").over(by_value)).withColumn("_next", F.lead("_k").over(by_value))
    col = f"_dc_{_name(a)}"
    starts = occ.where(F.col("_prev").isNull() | (F.col("_prev") < F.col("_k") - w)).select(
        *keys, (F.lit(2) * F.col("_k")).alias("_o"), F.lit(1).alias(col))
    ends = occ.where(F.col("_next").isNull() | (F.col("_next") > F.col("_k") + w)).select(
        *keys, (F.lit(2) * (F.col("_k") + w)).alias("_o"), F.lit(-1).alias(col))
    return starts.unionByName(ends)


def windowed_features(view: WindowedView, events: DataFrame, since: datetime | None = None,
                      until: datetime | None = None) -> DataFrame:
    """The view's offline table: (join keys..., event_timestamp, features...), with only the
    rows whose timestamp is in ``[since, until)`` when given (the events must then reach
    back to ``since - longest window - hop``; older ones are ignored)."""
    keys = view.join_keys
    if since is not None:
        events = events.where(F.col("_ts") >= F.lit(since - view.max_window - view.hop_td))
    partials = bucket_partials(view, events)
    probes = change_points(view, partials)
    if since is not None:
        probes = probes.where(F.col("_b") >= F.lit(_to_hop(view, since)))
    if until is not None:
        probes = probes.where(F.col("_b") < F.lit(_to_hop(view, until)))
    rows = [partials.withColumn("_o", F.lit(2) * F.col("_k")).drop("_k"),
            probes.select(*keys, (F.lit(2) * F.col("_b") - 1).alias("_o"), F.lit(True).alias("_probe"))]
    rows += _leave_rows(view, partials)
    rows += [_distinct_deltas(view, a, events) for a in view.aggregations if a.function == "distinct_count"]
    seq = rows[0]
    for r in rows[1:]:
        seq = seq.unionByName(r, allowMissingColumns=True)

    ordered = Window.partitionBy(*keys).orderBy("_o")
    upto = ordered.rangeBetween(Window.unboundedPreceding, Window.currentRow)
    b = (F.col("_o") + 1) / 2  # the probe's boundary, in hop units
    hop = F.lit(_hop_us(view))
    # Window expressions first, each once (several features share a running sum) ...
    over: dict[str, Column] = {}

    def cum(col: str) -> Column:
        over.setdefault(f"_c{col}", F.sum(col).over(upto))
        return F.coalesce(F.col(f"_c{col}"), F.lit(0))

    def latest(col: str) -> Column:
        over.setdefault(f"_c{col}", F.max(col).over(upto))
        return F.col(f"_c{col}")

    # ... then each feature from them.
    outs = []
    for a in view.aggregations:
        w, c = _hops(view, a.window_td), a.column
        n = cum("_n") - cum(f"_lv{w}_n") if a.function in ("count", "mean") else None
        if a.function == "count":
            col = n.cast("long")
        elif a.function in ("sum", "mean"):
            s = cum(f"_sum_{c}") - cum(f"_lv{w}_sum_{c}")
            col = s.cast("double") if a.function == "sum" else F.when(n > 0, s.cast("double") / n)
        elif a.function in ("min", "max"):
            name = f"_{a.function}{w}_{c}"
            over[name] = (F.min if a.function == "min" else F.max)(f"_{a.function}_{c}").over(ordered.rangeBetween(-2 * w, -1))
            col = F.col(name)
        elif a.function == "distinct_count":
            col = cum(f"_dc_{_name(a)}").cast("long")
        elif a.function == "last_time":
            t = latest("_last_ts")
            col = F.when(F.floor(F.unix_micros(t) / hop) >= b - w, F.unix_micros(t) / F.lit(1e6))
        elif a.function == "last":
            t = latest(f"_last_{c}")
            col = F.when(F.floor(F.unix_micros(t["t"]) / hop) >= b - w, t["v"])
        else:
            raise ValueError(f"unknown aggregation {a.function}")
        outs.append(col.alias(_name(a)))
    table = seq.select(*keys, "_o", "_probe", *[e.alias(k) for k, e in over.items()]).where(F.col("_probe"))
    ts = F.timestamp_micros(b.cast("long") * hop)
    return table.select(*keys, ts.alias(TS), *outs)
