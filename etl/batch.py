"""``skewless etl run``: the Spark batch job, lake raw events -> offline feature tables.

Each view's table is written to ``<lake>/features/<view>/date=YYYY-MM-DD/`` (Parquet,
``LakeLayout.features_uri``), the path Feast's sources point at. Runs are:

* **idempotent** — output dates are replaced whole (dynamic partition overwrite), so a
  re-run of a range rewrites identical rows;
* **incremental** — by default only dates from the earliest raw file landed since the
  previous run (late events included), in any contract the views read
  (``watched_contracts``), are recomputed, reading raw events back as far as
  the longest window needs (the lookback) — and in them only the rows of the entities
  those files hold events of (``etl.incremental``: the other rows of those dates are
  carried over as they are; count-only views add the new events' rows to theirs; every
  table equal to a full backfill's). At 1M events, 1% new
  on the last day: figures in benchmarks/README.md, "etl";
* a **backfill** of any range with ``start``/``end`` (dates, UTC); it leaves the
  incremental watermark alone, so the next incremental run still covers what the
  backfill did not. An incremental run with only ``end`` (before the data's rows end)
  recomputes ``[start, end)`` and leaves the watermark too: the rows of its entities from
  ``end`` on are the previous run's until the next run without ``end`` recomputes them
  (``watermark_moved`` in the summary).
* **small incremental runs without Spark**: when every view is computed by entity and
  none needs a join against every old event, the run reads the files with Arrow and
  computes the rows with the same kernel in this process (``etl.incremental.plan_local``;
  ``engine="spark"`` forces Spark): an incremental run's data are small, and a Spark job on
  small data costs its fixed overhead, not rows.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from etl import incremental, windows
from etl.transforms import TS, source_events, unique_events, windowed_features
from skewless.contracts import CONTRACTS
from skewless.errors import ConfigError, DataError
from skewless.features import checks as table_checks
from skewless.features import recomputed
from skewless.features.dsl import WindowedView
from skewless.lake import LANDING_ORDER, topic_schema
from skewless.lake_layout import LakeLayout
from skewless.settings import Settings
from skewless.spark import spark_session


def watched_contracts(views: tuple[WindowedView, ...]) -> tuple[str, ...]:
    """The contracts whose events the views read (their sources, and what enriches them),
    in the order the views name them: the ones whose newly landed files trigger a run."""
    from skewless.contracts import CONTRACTS

    found: dict[str, None] = {}
    for v in views:
        for contract in (v.source.contract, *(v.source.enrich[:1] if v.source.enrich else ())):
            if contract not in CONTRACTS:
                raise ConfigError(f"view {v.name} reads events of {contract!r}, which is no event contract",
                                  f"the contracts are {', '.join(CONTRACTS)} (skewless/contracts.py)")
            found[contract] = None
    return tuple(found)


def lookback(views: tuple[WindowedView, ...]) -> timedelta:
    """How far before an output row the views read events: the longest window plus a hop."""
    return max(v.max_window + v.hop_td for v in views)


def _raw_dir(settings: Settings, contract: str) -> Path:
    return LakeLayout.of(settings).raw_dir(getattr(settings.topics, contract))


def _raw_dates(settings: Settings, contract: str, newer_than: float | None = None) -> list[date]:
    """Dates with raw files (optionally only files landed after ``newer_than``, a unix time).

    The files are the lake's one list (``LakeLayout.raw_files``); a compaction's output
    counts as landed when the latest of its inputs did, so rewriting rows is no new data."""
    files = LakeLayout.of(settings).raw_files(getattr(settings.topics, contract))
    return sorted({f.date for f in files if newer_than is None or f.landed_at >= newer_than})


def read_raw(spark: SparkSession, settings: Settings, contract: str, start: date | None, end: date | None,
             columns: list[str] | None = None, landed_since: float | None = None,
             dates: set[date] | None = None, landed_before: float | None = None) -> DataFrame:
    """Raw events of a contract, pruned to the date partitions in ``[start, end)`` (and to
    the files landed since ``landed_since`` and before ``landed_before``, unix times, or of
    ``dates``, when given). A run reads the files landed before it started (its
    watermark): what lands during the run is the next run's, never half of both.

    Every landed copy of an event is a row (``first_landed`` keeps one per id). The schema
    is the lake's one schema of the topic (``skewless.lake.topic_schema``: every optional
    field of the contract, ``date`` a date), so files of older contract
    versions read the newer columns as null (what ``mergeSchema`` does, without opening
    every file's footer first) and every reader of the lake sees the same types."""
    from skewless.contracts import CONTRACTS

    schema = topic_schema(CONTRACTS[contract])
    root = _raw_dir(settings, contract)
    # The explicit file list (never the directory: a compaction's inputs and output are both
    # there for a while), pruned to the dates asked for before Spark sees a file.
    files = [str(f.path) for f in LakeLayout.of(settings).raw_files(getattr(settings.topics, contract), start, end)
             if (landed_since is None or f.landed_at >= landed_since) and (dates is None or f.date in dates)
             and (landed_before is None or f.landed_at < landed_before)]
    if not files:  # nothing landed for this contract (in the range) yet: an empty frame of its schema
        df = spark.createDataFrame([], schema=_spark_schema(schema))
    else:
        df = spark.read.schema(_spark_schema(schema)).option("basePath", str(root)).parquet(*files)
    if start is not None:
        df = df.where(F.col("date") >= F.lit(start.isoformat()).cast("date"))
    if end is not None:
        df = df.where(F.col("date") < F.lit(end.isoformat()).cast("date"))
    return df.select(*columns) if columns else df


def needed_columns(views: tuple[WindowedView, ...], contract: str) -> list[str]:
    """The columns of a contract's events that the views use (keys, times, values)."""
    cols: set[str] = set()
    for v in views:
        src = v.source
        if src.contract == contract:
            cols |= {src.time_column, *(a.column for a in v.aggregations if a.column)}
            cols |= set(v.join_keys) - set(src.enrich[2] if src.enrich else ())
            cols |= {src.where} if src.where else set()
            cols |= {src.enrich[1]} if src.enrich else set()
        elif src.enrich and src.enrich[0] == contract:
            cols |= {src.enrich[1], *src.enrich[2]}
    from skewless.contracts import CONTRACTS

    # The business id and the landing order decide which copy of an event counts.
    return sorted(cols | {CONTRACTS[contract].time_field, CONTRACTS[contract].id_field, *LANDING_ORDER})


def _spark_schema(schema) -> Any:
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)


def _state(settings: Settings) -> dict:
    p = LakeLayout.of(settings).etl_state_path
    return json.loads(p.read_text()) if p.exists() else {}


def _save_state(settings: Settings, state: dict) -> None:
    path = LakeLayout.of(settings).etl_state_path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, path)


def data_end(settings: Settings, views: tuple[WindowedView, ...]) -> date | None:
    """The end (exclusive) of the output dates the lake's events have rows in: where the last
    events leave their windows, the longest window after the data (None: no raw file)."""
    all_dates = [d for c in watched_contracts(views) for d in _raw_dates(settings, c)]
    return max(all_dates) + timedelta(days=lookback(views).days + 2) if all_dates else None


def plan_range(settings: Settings, views: tuple[WindowedView, ...], start: date | None,
               end: date | None) -> tuple[date, date] | None:
    """The output dates to (re)compute: explicit, or incremental since the last run (a
    file newly landed in any contract the views read moves the start back to its date)."""
    contracts = watched_contracts(views)
    last_view_day = data_end(settings, views)
    if last_view_day is None:
        return None
    if start is None:
        state = _state(settings)
        if state.get("started_at") is None:
            start = min(d for c in contracts for d in _raw_dates(settings, c))
        else:
            changed = [d for c in contracts for d in _raw_dates(settings, c, state["started_at"])]
            if not changed:
                return None
            start = min(changed)
    end = end or last_view_day
    if end <= start:
        # Only --end given, before what changed since the last run: nothing to compute.
        raise ConfigError(f"the ETL range is empty: end {end} is not after start {start} "
                         "(the earliest date with new events since the last run); give a later --end")
    return start, end


def compute_views(views: tuple[WindowedView, ...], frames: dict[str, DataFrame],
                  since: datetime | None = None, until: datetime | None = None) -> dict[str, DataFrame]:
    """Every view's table from the contracts' frames (pure transformation, no I/O), with
    the rows in ``[since, until)`` when given. The frames hold one event per id: pass
    them through ``unique_events`` first."""
    return {v.name: windowed_features(v, source_events(v.source, frames), since, until) for v in views}


def _write_rows(view: WindowedView, table: DataFrame, path: str) -> None:
    """Write ``table`` under ``path`` as the view's tables are laid out: ``date=`` partitions,
    one file per date, rows sorted by entity and time (replacing the dates present)."""
    table = table.withColumn("date", F.to_date(F.col(TS)))
    (table.repartition("date").sortWithinPartitions(*view.join_keys, TS).write.mode("overwrite")
     .partitionBy("date").option("compression", "zstd").parquet(path))


def _write_view(spark: SparkSession, settings: Settings, view: WindowedView, table: DataFrame) -> int:
    """Replace the view's date partitions present in ``table``; returns rows written."""
    layout = LakeLayout.of(settings)
    path = layout.features_uri(view.name)
    started = time.time()
    _write_rows(view, table, path)
    local = layout.features_dir(view.name)
    rows = _rows_written_since(local, started)
    if not _has_data(local):
        # No row yet (e.g. no chargeback so far): an empty table of the right schema, so
        # Feast and Spark can read the source (harmless once real rows exist).
        empty = table.limit(0).drop("date")
        spark.createDataFrame([], empty.schema).coalesce(1).write.mode("overwrite").option(
            "compression", "zstd").parquet(f"{path}/date=1970-01-01")
    return rows


def _rows_written_since(path: Path, started: float) -> int:
    """Rows in the table's files written by this run (from the Parquet footers)."""
    import pyarrow.parquet as pq

    files = [p for p in path.rglob("part-*.parquet") if p.stat().st_mtime >= started - 1]
    return sum(pq.ParquetFile(p).metadata.num_rows for p in files)


def _has_data(root: Path) -> bool:
    return root.is_dir() and any(p.name.endswith(".parquet") for p in root.rglob("part-*"))


def _breaks(rule: table_checks.RowRule, numeric: bool):
    """A Spark condition true on the rows breaking ``rule`` (NaN counts as null, never as
    a value beyond a bound)."""
    c = F.col(rule.column)
    if rule.kind == "not_null":
        return c.isNull() | F.isnan(c) if numeric else c.isNull()
    if rule.kind == "min":
        return c < F.lit(rule.bound)
    return (c > F.lit(rule.bound)) & ~F.isnan(c)


def profile_view(spark: SparkSession, settings: Settings, view: WindowedView, events: DataFrame,
                 lo: datetime, hi: datetime, path: str | None = None) -> dict[str, Any]:
    """The figures ``skewless.features.checks`` checks a view's table by: the rows this run
    wrote (read back from the lake, ``[lo, hi)``; from ``path`` when given: an incremental
    run's recomputed rows), rows breaking each row rule, and the source events read
    (``events``: the view's source events, time column ``_ts``)."""
    from pyspark.sql import types as T

    layout = LakeLayout.of(settings)
    table = (spark.read.parquet(path or layout.features_uri(view.name))
             .where((F.col("date") >= F.lit(lo.date().isoformat()).cast("date"))
                    & (F.col("date") <= F.lit(hi.date().isoformat()).cast("date")))
             .where((F.col(TS) >= F.lit(lo)) & (F.col(TS) < F.lit(hi))))
    numeric = {f.name for f in table.schema.fields if isinstance(f.dataType, T.NumericType)}
    rules = table_checks.row_rules(view)
    aggs = [F.count(F.lit(1)).alias("rows"), F.max(F.unix_micros(F.col(TS))).alias("newest_row")]
    aggs += [F.sum(F.when(_breaks(r, r.column in numeric), 1).otherwise(0)).alias(f"bad:{r.name}") for r in rules]
    t = table.agg(*aggs).first().asDict()
    return {**{k: (v or 0) for k, v in t.items() if k.startswith("bad:")}, "rows": t["rows"],
            "newest_row": None if t["newest_row"] is None else t["newest_row"] / 1e6,
            **events_profile(view, events, lo, hi)}


def events_profile(view: WindowedView, events: DataFrame, lo: datetime, hi: datetime) -> dict[str, Any]:
    """The profile's figures of the source events read (``events``: time column ``_ts``)."""
    return events_profiles([view], events, lo, hi)[view.name]


def events_profiles(views: list[WindowedView], events: DataFrame, lo: datetime, hi: datetime) -> dict[str, dict]:
    """``events_profile`` of several views reading the same events, in one Spark job."""
    hops = sorted({v.hop_td for v in views})
    in_range = [F.sum(F.when((F.col("_ts") >= F.lit(lo)) & (F.col("_ts") < F.lit(hi - h)), 1).otherwise(0))
                .alias(f"in_range_{i}") for i, h in enumerate(hops)]
    e = events.where(F.col("_ts") < F.lit(hi)).agg(
        F.count(F.lit(1)).alias("events"), F.max(F.unix_micros(F.col("_ts"))).alias("newest_event"), *in_range,
    ).first().asDict()
    return {v.name: {"events": e["events"], "events_in_range": e[f"in_range_{hops.index(v.hop_td)}"] or 0,
                     "newest_event": None if e["newest_event"] is None else e["newest_event"] / 1e6,
                     "range_end": hi.timestamp()} for v in views}


def profile_rows(view: WindowedView, rows: Any) -> dict[str, Any]:
    """The table figures of ``profile_view`` over rows on the driver (an Arrow table: an
    incremental run's rows of its affected entities): count, newest row, rows breaking
    each row rule (NaN counts as null, never as a value beyond a bound)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    out: dict[str, Any] = {"rows": rows.num_rows}
    ts = rows.column(TS)
    newest = pc.max(ts.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())).as_py() if rows.num_rows else None
    out["newest_row"] = None if newest is None else newest / 1e6
    for r in table_checks.row_rules(view):
        c = rows.column(r.column)
        if r.kind == "not_null":
            bad = pc.or_kleene(pc.is_null(c), pc.is_nan(c)) if pa.types.is_floating(c.type) else pc.is_null(c)
        elif r.kind == "min":
            bad = pc.less(c, r.bound)
        else:
            bad = pc.greater(c, r.bound)  # NaN > x is false
        out[f"bad:{r.name}"] = int(pc.sum(pc.fill_null(bad, False).cast(pa.int64())).as_py() or 0)
    return out


def _quality_report(settings: Settings, report: dict[str, Any]) -> Path:
    """Write the run's feature-table check report (JSON); returns its path."""
    folder = LakeLayout.of(settings).quality_dir
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"etl-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str))
    os.replace(tmp, path)
    return path


ENGINES = ("auto", "spark")


def check_engine(engine: str) -> None:
    if engine not in ENGINES:
        raise ConfigError(f"unknown ETL engine {engine!r}", "use " + " or ".join(ENGINES))


def run_batch(
    settings: Settings,
    start: date | None = None,
    end: date | None = None,
    master: str | None = None,
    *,
    views: tuple[WindowedView, ...],
    on_view: Callable[[str, int, int], None] | None = None,
    engine: str = "auto",
) -> dict[str, Any]:
    """Compute and write the offline feature tables of ``views`` for output dates in
    ``[start, end)`` (the deployment's views: ``skewless.features.definitions.load``).

    ``engine``: ``"auto"`` lets a small incremental run read and compute in this process,
    without Spark, when it can (``etl.incremental.plan_local``) and the Spark master is
    local (a cluster's master, given or configured, means every job runs there);
    ``"spark"`` always uses Spark."""
    check_engine(engine)
    if engine == "auto" and not (master or settings.spark_master).startswith("local"):
        engine = "spark"
    if not views:
        raise ConfigError("no feature views to compute", "declare some in the feature definitions (VIEWS)")
    t0 = time.time()
    layout = LakeLayout.of(settings)
    contracts = watched_contracts(views)
    incremental.recover(settings)  # a crashed run's committed merge first (etl.incremental)
    planned = plan_range(settings, views, start, end)
    if planned is None:
        if not any(_raw_dates(settings, c) for c in contracts):
            raise DataError(f"no raw events of {', '.join(contracts)} in {layout.raw_root}",
                            "land some with: skewless ingest consume")
        return {"views": {}, "skipped": "no raw files landed since the previous run", "seconds": 0.0}
    out_start, out_end = planned
    natural_end = data_end(settings, views)  # as planned (files landing during the run are the next run's)
    # An incremental run recomputes only the entities with new events (etl.incremental), in
    # every view whose table exists; a backfill (or a first run, or a new view) all of them.
    since = _state(settings).get("started_at") if start is None else None
    by_entity = [v for v in views if since is not None and incremental.has_table(settings, v)]
    phases: dict[str, float] = {}  # where the run's time went (seconds), in order

    @contextlib.contextmanager
    def phase(name: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            phases[name] = round(phases.get(name, 0.0) + time.perf_counter() - t, 2)

    read_start = out_start - timedelta(days=lookback(views).days + 1)
    # A small incremental run (every view by entity, none joining every old event) reads
    # with Arrow and computes with the same kernel in this process: no Spark job, no Spark
    # start (etl.incremental.plan_local). Else Spark, as below.
    local = None
    if since is not None and len(by_entity) == len(views) and engine != "spark":
        local = incremental.plan_local(settings, views, contracts, {c: needed_columns(views, c) for c in contracts},
                                       read_start, out_end, since, t0, phase)
    raw: dict[str, DataFrame] = {}
    if local is None:
        with phase("spark_start"):  # ~0 when this process runs Spark already
            spark = spark_session(settings, master, app="skewless-etl")
        # Every view reads the same events: read them once, one copy per id (each view then
        # keeps only the lookback its own windows need). A retried event's copies share its
        # event time, hence its date partition: a copy landed since the last run lands in a
        # date this run recomputes, and the copy landed before it is read with it.
        raw = {c: read_raw(spark, settings, c, read_start, out_end, needed_columns(views, c), landed_before=t0)
               for c in contracts}
    lo = datetime.combine(out_start, datetime.min.time(), tzinfo=timezone.utc)
    hi = datetime.combine(out_end, datetime.min.time(), tzinfo=timezone.utc)
    persisted: list[DataFrame] = []

    def keep(df: DataFrame) -> DataFrame:
        persisted.append(df.persist())
        return df

    frames: dict[str, DataFrame] = {}
    events: dict[str, DataFrame] = {}  # per view: its source events (all, its affected entities', or the new ones)
    read: dict[str, incremental.EntityRows] = {}
    key_tables: dict[tuple, Any] = {}  # per group computed by entity: its affected keys, on the driver
    additive: list[WindowedView] = []  # views computed from their table and the new events (etl.windows.add_rows)
    retried: dict[str, set] | None = None  # per contract: every id with several landed copies (the index)
    landed: dict[str, int] = {c: 0 for c in contracts}
    duplicates: dict[str, int] = {c: 0 for c in contracts}
    if len(by_entity) < len(views):
        with phase("read"):
            frames = {c: keep(f) for c, f in unique_events(raw).items()}
            landed = {c: f.count() for c, f in raw.items()}
            duplicates = {c: landed[c] - frames[c].count() for c in frames}
            if since is None and start is None:  # a first run reads every file: the index of retries
                retried = {c: incremental.retried_ids(raw[c], c) if duplicates[c] else set() for c in contracts}
        for v in views:
            if v not in by_entity:
                events[v.name] = source_events(v.source, frames)
    if local is not None:
        additive, retried, key_tables = local.additive, local.retried, local.keys
        landed = {c: local.copies.get(c, 0) for c in contracts}
        duplicates = {c: local.copies.get(c, 0) - local.ids.get(c, 0) for c in contracts}
    elif by_entity:
        # Every landed copy of the ids in new files: a retried event's copies share its event
        # time, so they are in the new files' dates.
        fresh, new_retried, compacted = {}, {}, {}
        with phase("new_events"):
            for c in contracts:
                files = [f for f in layout.raw_files(getattr(settings.topics, c)) if since <= f.landed_at < t0]
                compacted[c] = any(f.compacted for f in files)
                ids = read_raw(spark, settings, c, read_start, out_end, [CONTRACTS[c].id_field], landed_since=since,
                               landed_before=t0)
                fresh[c] = keep(incremental._copies_of(read_raw(spark, settings, c, read_start, out_end,
                                                                needed_columns(views, c), dates={f.date for f in files},
                                                                landed_before=t0), ids, c))
                new_retried[c] = incremental.retried_ids(fresh[c], c)
        with phase("retried_index"):  # once per lake: the index is kept from then on
            known = {c: incremental.load_retried(settings, c) for c in contracts}
            retried = {c: (known[c] if known[c] is not None else incremental.retried_ids(
                read_raw(spark, settings, c, None, None, [CONTRACTS[c].id_field], landed_before=t0), c))
                | new_retried[c] for c in contracts}
        # Count-only views whose new events are all new ids (no retry, no compaction mixing
        # old rows into a new file), whose table no run wrote into since the watermark (a
        # failed one may have added these events already): their table plus the new events' rows.
        for v in by_entity:
            mine = [v.source.contract, *([v.source.enrich[0]] if v.source.enrich else [])]
            if (windows.additive(v) and not any(new_retried[c] or compacted[c] for c in mine)
                    and not incremental.written_since(settings, v, since)):
                additive.append(v)
        group_keys: dict[tuple, DataFrame] = {}
        with phase("affected_entities"):
            for v in by_entity:
                g = incremental.group_of(v)
                if v not in additive and g not in group_keys:
                    group_keys[g] = keep(incremental.affected_keys(v, raw, fresh))
                    key_tables[g] = incremental.keys_table(group_keys[g])
        # Groups without an affected entity change nothing: no rows to read for them.
        busy = [v for v in by_entity if v not in additive and key_tables[incremental.group_of(v)].num_rows]
        extra: dict[str, dict] = {}  # an enriched additive view's rows by id, read in the same scan
        for v in additive:
            if v.source.enrich:
                for c, cond in incremental.delta_ids(v, fresh).items():
                    extra.setdefault(c, {})[("delta", v.name)] = cond
        with phase("their_events"):
            found, read = incremental.entity_events(busy, raw, group_keys, retried, extra)
        for g in {incremental.group_of(v) for v in busy}:
            keep(found[g])
        for v in busy:
            events[v.name] = found[incremental.group_of(v)]
        shared: dict[Any, DataFrame] = {}  # views of one source share its new events
        for v in additive:
            k = v.source if not v.source.enrich else v.name
            if k not in shared:
                shared[k] = keep(incremental.delta_events(v, fresh, read))
            events[v.name] = shared[k]
        if not frames:
            landed = {c: read[c].copies if c in read else 0 for c in contracts}
            duplicates = {c: read[c].copies - read[c].ids if c in read else 0 for c in contracts}
    events_read = landed[contracts[0]]  # the first view's source: the run's throughput figure
    summary: dict[str, Any] = {"views": {}}
    quality: dict[str, Any] = {}
    days_back = lookback(views).days + 1
    # An incremental run's driver-side work on a view (adding the new events' rows, the
    # merge into the date files: Arrow, storage) runs in a thread while Spark computes the
    # next view; the views' merges are independent (each its own staging and journal).
    pending: list[tuple[int, WindowedView, float, dict, Any]] = []
    event_figures: dict[str, dict] = {}
    ordered: dict[str, dict] = {}

    def finish(i: int, view: WindowedView, tv: float, info: dict, profile: dict) -> None:
        failed = table_checks.evaluate(view, profile)
        ordered[view.name] = {**info, "seconds": round(time.perf_counter() - tv, 2)}
        # The declared checks of the table just written (skewless.features.checks).
        quality[view.name] = {"checks": len(table_checks.row_rules(view)) + len(table_checks.table_checks(view)),
                              "failed": [{"check": f.check, "count": f.count, "description": f.description}
                                         for f in failed], "profile": profile}
        if on_view:
            on_view(view.name, i + 1, len(views))

    def by_driver(view: WindowedView, keys: Any, rows_t: Any, spark_profile: dict) -> tuple[dict, dict]:
        info: dict[str, Any] = {"path": layout.features_uri(view.name), "mode": "entities"}
        current = None
        t = time.perf_counter()
        if view in additive:
            current = incremental.read_dates(settings, view, out_start, out_end)
            prev = incremental.latest_before(settings, view, keys, out_start, days_back)
            delta_rows = rows_t
            rows_t, added = incremental.add_delta(view, current, prev, keys, delta_rows, lo)
            info.update({"mode": "additive", "rows_added": added, "new_events_rows": delta_rows.num_rows})
        # The rows written for the affected entities (additive: the row rules on every one,
        # the row counts on those at the new events' change points, against those events).
        profile = {**profile_rows(view, rows_t), **spark_profile}
        if view in additive:
            profile["rows"] = delta_rows.num_rows
        # Merged whether the checks pass or not (as a full run's failing table is written):
        # the watermark then stays and the run fails.
        incremental.mark_written(settings, view, t0)
        info.update({"rows": rows_t.num_rows, "entities": keys.num_rows,
                     **incremental.merge_view(settings, view, keys, rows_t, out_start, out_end, current)})
        info["driver_seconds"] = round(time.perf_counter() - t, 2)
        return info, profile

    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="etl-merge")
    try:
        for i, view in enumerate(views):
            name = view.name
            tv = time.perf_counter()
            if view in by_entity:
                jk = list(view.join_keys)
                keys = None if view in additive else key_tables[incremental.group_of(view)]
                rows_t = None
                if local is not None and (keys is None or keys.num_rows):
                    with phase("checks"):
                        spark_profile = incremental.local_events_profiles([view], local.events[name], lo, hi)[name]
                    if keys is not None or spark_profile["events"]:
                        with phase("compute"):
                            rows_t = incremental.local_rows(view, local.events[name], lo, hi)
                    if keys is None and rows_t is not None and rows_t.num_rows:
                        keys = rows_t.select(jk).group_by(jk).aggregate([])
                elif keys is None or keys.num_rows:
                    with phase("checks"):
                        if name not in event_figures:  # one Spark job for every view of these events
                            same = [v for v in by_entity if events.get(v.name) is events[name]]
                            event_figures.update(events_profiles(same, events[name], lo, hi))
                        spark_profile = event_figures[name]
                    if keys is not None or spark_profile["events"]:  # (an additive view: new events of its)
                        with phase("compute"):
                            # The affected entities' rows (or the new events'): small.
                            rows_t = windowed_features(view, events[name], lo, hi).toArrow()
                    if keys is None and rows_t is not None and rows_t.num_rows:
                        keys = rows_t.select(jk).group_by(jk).aggregate([])
                if keys is None or not keys.num_rows or rows_t is None:  # no new event of this view's
                    ordered[name] = {"path": layout.features_uri(name), "rows": 0, "entities": 0, "rows_carried": 0,
                                     "dates_rewritten": 0, "seconds": 0.0}
                    quality[name] = {"checks": 0, "failed": [], "skipped": "no entity with new events"}
                    if on_view:
                        on_view(name, i + 1, len(views))
                    continue
                pending.append((i, view, tv, {}, pool.submit(by_driver, view, keys, rows_t, spark_profile)))
            else:
                table = windowed_features(view, events[name], lo, hi)
                with phase("compute_write"):
                    incremental.mark_written(settings, view, t0)
                    rows = _write_view(spark, settings, view, table)
                with phase("checks"):
                    profile = profile_view(spark, settings, view, events[name], lo, hi)
                finish(i, view, tv, {"rows": rows, "path": layout.features_uri(name)}, profile)
        if pending:
            with phase("merge_wait"):  # what of the driver's work did not overlap Spark's
                for i, view, tv, _, fut in pending:
                    info, profile = fut.result()
                    finish(i, view, tv, info, profile)
            # The driver's share (in its threads, mostly while Spark computed).
            phases["merge_in_thread"] = round(sum(ordered[v.name]["driver_seconds"] for _, v, *_ in pending), 2)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for f in persisted:
            f.unpersist()
        for r in read.values():
            r.unpersist()
    summary["views"] = {v.name: ordered[v.name] for v in views}
    recomputed.mark(settings, lo)  # the online store reloads from here (late events included)
    report = _quality_report(settings, {"start": out_start.isoformat(), "end": out_end.isoformat(), "views": quality})
    failures = [f for q in quality.values() for f in q["failed"]]
    summary["quality"] = {"report": str(report), "checks": sum(q["checks"] for q in quality.values()),
                          "failed": len(failures)}
    if failures:
        # The tables are written (the online store reloads them like any run's), but the
        # incremental watermark stays: the next run recomputes this range.
        shown = "; ".join(f"{f['check']} ({f['count']})" for f in failures[:8])
        more = f" and {len(failures) - 8} more" if len(failures) > 8 else ""
        raise DataError(f"feature table checks failed: {shown}{more}", f"the report: {report}")
    # Only a run that covered every change moves the incremental watermark: an incremental
    # run cut short by an explicit ``end`` (before the data's rows end) leaves the rows of
    # its entities from ``end`` on as they were, so it keeps the watermark where it was and
    # the next run without ``end`` recomputes them (from the same start, to the data's end).
    moves_watermark = start is None and (end is None or out_end >= natural_end)
    if moves_watermark:
        # The index of retried ids covers what the watermark covers (kept with it; a run that
        # did not see every new file's ids drops it: the next run rebuilds it).
        for c in contracts:
            incremental.save_retried(settings, c, retried[c] if retried is not None else None)
        _save_state(settings, {"started_at": t0, "range": [out_start.isoformat(), out_end.isoformat()]})
    elapsed = time.time() - t0
    summary.update({"start": out_start.isoformat(), "end": out_end.isoformat(), "events_read": events_read,
                    "by_entity": [v.name for v in by_entity], "phases": phases,
                    "engine": "spark" if local is None else "local",
                    # False: an explicit range; rows from ``end`` on wait for the next run.
                    "watermark_moved": moves_watermark,
                    "duplicates_dropped": duplicates,
                    "seconds": round(elapsed, 2), "events_per_s": round(events_read / elapsed, 1) if elapsed else None,
                    "master": master or settings.spark_master})
    return summary
