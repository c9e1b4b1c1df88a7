"""Incremental runs of the batch job: recompute only the entities with new events.

A view's rows for one entity depend on that entity's events only (``etl.windows``). Events
landed since the previous run can therefore change rows of the entities they belong to,
and of no other — and only from the earliest date they land in (``out_start``: a row at
``t`` reads events before ``t``). Every other row of the tables, in particular the rows
where OLD events leave their windows after ``out_start`` (the previous run wrote them:
every run writes up to its events' last decay point), is already right.

So an incremental run (``etl.batch.run_batch`` without ``start``, after a first run) reads
the files landed before it started (what lands during it is the next run's), and:

1. **affected entities** (``affected_keys``): the join keys of every landed copy of every
   event id found in a newly landed file (all copies, so a later copy that would win the
   first-landed rule, or one holding another key, cannot be missed); for an enriched source
   (chargebacks get their merchant from the transaction) both sides of the join: new labels
   with any copy of their transaction, and any label of a new transaction;
2. **their events** (``entity_events``): the raw rows over the usual read range that can
   make one of their source events — every copy of every id having a copy of theirs, so
   ``first_landed`` keeps the same copy as a full run does — then the same ``unique_events``,
   ``source_events`` and ``windowed_features`` (Spark, ``mapInPandas`` of ``etl.windows``)
   as a backfill, restricted to the affected entities. The values are the same numbers as
   a backfill's: the kernel computes each entity from its own buckets only. Which ids have
   several copies is kept in an index (``load_retried``: every id with several landed
   copies, updated by each run from the new files' copies), not found by a scan of every id;
3. **count-only views add** (``etl.windows.additive``, ``add_rows``) instead: a window's
   count over old and new events is the old count plus the new events' — exact integers.
   Spark computes the new events' rows alone (``delta_events``); from the earliest new date
   on, each affected entity's rows are the union of its current rows' boundaries and the
   new rows', valued old + new (``add_delta``, with its latest row before that date,
   ``latest_before``). That reads no old event: the busiest merchants (40% of the events)
   cost their new events and their table rows. Only when every new id is new (no retried
   copy among the new files, no compaction mixing old rows into a new file) and no run
   wrote into the table since the watermark (``mark_written``: a failed run may have added
   the same events already) — otherwise the view's entities are recomputed as in 2;
4. **merge** (``merge_view``): the rows come back to the driver (Arrow: the affected
   entities' rows, small); each output date of the table is rebuilt from its current file
   minus the affected entities' rows plus their new rows (Arrow, file by file: it is
   storage, not feature compute; a date without affected rows is left alone) and swapped
   in, in a thread while Spark computes the next view.

**In-process** (``plan_local``): when every view is computed by entity and none needs a
join against every old event (an enriched view that cannot add), steps 1-3 run with Arrow
in this process — the same file list and landing watermark, ``first_landed`` as an Arrow
sort, the same kernel (``etl.windows.events_rows``) over every affected entity at once —
and the run starts no Spark at all: a dozen Spark jobs on small data cost their fixed
overhead (0.3-1.5 s each), not rows. Up to ``LOCAL_MAX_NEW_EVENTS`` newly landed rows;
``run_batch(engine="spark")`` forces Spark (the tests run both on the same files).

Why not daily or per-hop partials: a row at ``t`` in a 30-day window needs its edge days at
hop resolution (1 s for the per-card views), and an incremental run's range holds the
decay rows of the whole last 30 days, so stored partials would still be read for every
entity and every day — as much as the raw events (a 1 s bucket holds about one event).
Restricting to the entities is what cuts the work; what remains is proportional to the
new events' entities, plus a copy of the unaffected rows of the rewritten dates (measured
in benchmarks/README.md, "etl").

**Crash safety.** A date partition is replaced only by a complete, staged file. The run
writes every merged date under ``<lake>/_etl_staging/<view>/``, then a journal naming the
dates to replace (atomic rename: the commit point), then swaps directories and deletes the
journal. ``recover`` (at the start of every run) rolls a committed journal forward and
drops uncommitted staging. The incremental watermark moves only after every view is
merged, as before: a crash before that makes the next run recompute the same entities.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from datetime import date, datetime, timedelta
from functools import reduce
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from etl import windows
from etl.transforms import TS, source_events, unique_events
from skewless.contracts import CONTRACTS
from skewless.features.dsl import WindowedView
from skewless.lake_layout import LakeLayout
from skewless.settings import Settings

STAGING = "_etl_staging"
JOURNAL = "COMMIT.json"


def staging_dir(settings: Settings, view: str) -> Path:
    return LakeLayout.of(settings).root / STAGING / view


def group_of(view: WindowedView) -> tuple:
    """Views with the same source and join keys have the same affected entities and events."""
    return (view.source, tuple(view.join_keys))


def affected_keys(view: WindowedView, raw: dict[str, DataFrame], fresh: dict[str, DataFrame]) -> DataFrame:
    """The distinct join keys of ``view`` that rows in ``fresh`` (all landed copies of the
    newly landed ids, per contract) can give an event to, or take one from."""
    keys = list(view.join_keys)
    src = view.source
    if not src.enrich:
        return fresh[src.contract].select(*keys).distinct()
    other, key, columns = src.enrich
    here = [k for k in keys if k not in columns]
    a = fresh[src.contract].select(key, *here).join(raw[other].select(key, *columns), key)
    b = raw[src.contract].select(key, *here).join(fresh[other].select(key, *columns), key)
    return a.select(*keys).unionByName(b.select(*keys)).distinct()


def _copies_of(frame: DataFrame, matching: DataFrame, contract: str) -> DataFrame:
    """Every row of ``frame`` whose event id has a copy in ``matching`` (small: broadcast)."""
    idf = CONTRACTS[contract].id_field
    return frame.join(F.broadcast(matching.select(idf).distinct()), idf, "left_semi")


# Rows whose columns are in each frame's (all must hold); broadcast the frame or not.
Condition = list[tuple[list[str], DataFrame, bool]]


class EntityRows:
    """The raw rows of one contract that the affected entities' events can come from, read
    in ONE scan for every group of views (``conditions``: per group, the key sets a row must
    be in), with every landed copy of their ids, so ``first_landed`` keeps what a full run
    keeps.

    Copies are rare, and known: ``retried`` holds every id with several landed copies
    (``load_retried``: the stored index, plus the retries among the new files). Without one
    among the ids found, every id found has one copy — read already, deduplicated already;
    otherwise those ids are read whole once more and each group gets every copy of its ids
    (``rows``)."""

    def __init__(self, raw: DataFrame, contract: str, conditions: dict[Any, Condition], retried: set):
        self.idf = CONTRACTS[contract].id_field
        self.flags = {g: f"_g{i}" for i, g in enumerate(conditions)}
        tagged = raw
        ands: dict[Any, list] = {g: [] for g in conditions}
        for g, parts in conditions.items():
            for n, (cols, keys, small) in enumerate(parts):
                flag = f"{self.flags[g]}_{n}"
                marks = keys.select(*cols).distinct().withColumn(flag, F.lit(True))
                tagged = tagged.join(F.broadcast(marks) if small else marks, cols, "left")
                ands[g].append(F.coalesce(F.col(flag), F.lit(False)))
        for g, conds in ands.items():
            tagged = tagged.withColumn(self.flags[g], reduce(lambda a, b: a & b, conds) if conds else F.lit(True))
        tagged = tagged.select(*raw.columns, *self.flags.values())
        self.found = tagged.where(reduce(lambda a, b: a | b, [F.col(f) for f in self.flags.values()])).persist()
        self.extra: DataFrame | None = None
        self.retried: list[Any] = []
        spark = raw.sparkSession
        if retried:
            known = spark.createDataFrame([(i,) for i in sorted(retried)], [self.idf])
            hits = self.found.join(F.broadcast(known), self.idf, "left_semi").groupBy(self.idf).count().collect()
            self.retried = [r[0] for r in hits]
            in_found = sum(int(r[1]) for r in hits)
        n = self.found.count()
        self.copies = self.ids = n
        if self.retried:
            self.extra = raw.where(F.col(self.idf).isin(self.retried)).persist()
            self.copies = n - in_found + self.extra.count()
            self.ids = n - in_found + len(self.retried)
        self.columns = raw.columns

    def rows(self, group: Any) -> DataFrame:
        """The group's rows: every copy of every id having a copy matching its condition."""
        mine = self.found.where(F.col(self.flags[group]))
        if self.extra is None:
            return mine.select(*self.columns)
        retried = F.col(self.idf).isin(self.retried)
        return mine.where(~retried).select(*self.columns).unionByName(
            self.extra.join(mine.where(retried).select(self.idf).distinct(), self.idf, "left_semi"))

    def deduplicated(self) -> bool:
        return self.extra is None

    def unpersist(self) -> None:
        self.found.unpersist()
        if self.extra is not None:
            self.extra.unpersist()


def entity_events(views: list[WindowedView], raw: dict[str, DataFrame], keys: dict[Any, DataFrame],
                  retried: dict[str, set], extra: dict[str, dict[Any, Condition]] | None = None
                  ) -> tuple[dict[Any, DataFrame], dict[str, EntityRows]]:
    """Per group (``group_of``; ``keys``: its affected keys), the source events of its
    affected entities — exactly those a full run gives them — and the rows read, per contract.
    ``extra``: more conditions to read in the same scan, per contract (``read[c].rows(g)``)."""
    first = {group_of(v): v for v in views}
    order = sorted(raw, key=lambda c: 0 if any(v.source.enrich and v.source.enrich[0] == c for v in first.values()) else 1)
    read: dict[str, EntityRows] = {}
    for c in order:
        conditions: dict[Any, Condition] = {}
        for g, v in first.items():
            src, jk = v.source, list(v.join_keys)
            if not src.enrich:
                if src.contract == c:
                    conditions[g] = [(jk, keys[g], True)]
                continue
            other, key, columns = src.enrich
            here, theirs = [k for k in jk if k not in columns], [k for k in jk if k in columns]
            if other == c:
                conditions[g] = [(theirs, keys[g], True)] if theirs else []
            elif src.contract == c:
                conditions[g] = [([key], read[other].rows(g), False)] + ([(here, keys[g], True)] if here else [])
        conditions.update((extra or {}).get(c, {}))
        if conditions:
            read[c] = EntityRows(raw[c], c, conditions, retried.get(c, set()))
    out = {}
    for g, v in first.items():
        contracts = [v.source.contract, *([v.source.enrich[0]] if v.source.enrich else [])]
        frames = {c: read[c].rows(g) for c in contracts}
        frames = {c: f if read[c].deduplicated() else unique_events({c: f})[c] for c, f in frames.items()}
        out[g] = source_events(v.source, frames).join(F.broadcast(keys[g]), list(v.join_keys), "left_semi")
    return out, read


# --- the index of retried ids (replaces a scan of every id of the read range)


def load_retried(settings: Settings, contract: str) -> set | None:
    """The stored ids of ``contract`` with several landed copies in the files read by the
    runs so far (None: no index yet — a lake from before it, or a run that could not keep it)."""
    path = LakeLayout.of(settings).retried_ids_path(contract)
    if not path.exists():
        return None
    return set(pq.read_table(path).column(0).to_pylist())


def save_retried(settings: Settings, contract: str, ids: set | None) -> None:
    """Store (or, with None, drop) the index; atomic. A superset is harmless (those ids are
    read whole), a missing id is not: it is saved only with the watermark that it covers."""
    path = LakeLayout.of(settings).retried_ids_path(contract)
    if ids is None:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(pa.table({CONTRACTS[contract].id_field: pa.array(sorted(ids), pa.string())}), tmp)
    os.replace(tmp, path)


def retried_ids(frame: DataFrame, contract: str) -> set:
    """The ids with more than one row in ``frame`` (one Spark job)."""
    idf = CONTRACTS[contract].id_field
    return {r[0] for r in frame.groupBy(idf).count().where(F.col("count") > 1).select(idf).collect()}


# --- the additive path: count-only views (etl.windows.additive)


def mark_written(settings: Settings, view: WindowedView, run: float) -> None:
    """Note that the run started at ``run`` (its watermark to be) writes into ``view``'s table
    — before it does. Adding new events is not idempotent: if that run then fails (checks,
    a crash) the watermark stays behind, the next run sees the same files as new, and a
    table that has them already must not get them again (``written_since``)."""
    path = LakeLayout.of(settings).etl_written_path(view.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"run": run}))
    os.replace(tmp, path)


def written_since(settings: Settings, view: WindowedView, watermark: float) -> bool:
    """Has a run after the watermark written into the table (or is it unknown: a table from
    before these marks)? Then it may hold some of the new events: recompute its entities."""
    path = LakeLayout.of(settings).etl_written_path(view.name)
    if not path.exists():
        return True
    return json.loads(path.read_text())["run"] > watermark


def delta_ids(view: WindowedView, fresh: dict[str, DataFrame]) -> dict[str, Condition]:
    """For an enriched ``view``: per contract, the raw rows its new pairs can come from —
    those holding the id of a new event on either side (read with the affected entities'
    rows, in the same scan: ``entity_events``' ``extra``)."""
    src = view.source
    other, key, _ = src.enrich
    ids = (fresh[src.contract].select(F.col(CONTRACTS[src.contract].id_field).alias(key))
           .unionByName(fresh[other].select(F.col(CONTRACTS[other].id_field).alias(key))).distinct())
    return {src.contract: [([key], ids, True)], other: [([key], ids, True)]}


def delta_events(view: WindowedView, fresh: dict[str, DataFrame], read: dict[str, EntityRows]) -> DataFrame:
    """The source events of ``view`` that the new files add: with no id of theirs landed
    before (the caller checks: ``fresh`` holds one copy of each of its ids), a full run's
    events are the previous run's plus these. For an enriched source, the pairs where either
    side is new: every copy of the rows ``delta_ids`` names on both sides (``read``, group
    ``("delta", view.name)``), deduplicated."""
    src = view.source
    if not src.enrich:
        return source_events(src, {src.contract: fresh[src.contract]})
    g = ("delta", view.name)
    frames = {c: read[c].rows(g) for c in (src.contract, src.enrich[0])}
    frames = {c: f if read[c].deduplicated() else unique_events({c: f})[c] for c, f in frames.items()}
    return source_events(src, frames)


def latest_before(settings: Settings, view: WindowedView, keys: pa.Table, day: date, days: int) -> pa.Table | None:
    """Each entity of ``keys``' latest row before ``day`` (the value it holds then), from the
    dates before it, newest first, at most ``days`` back: a row older than the longest window
    holds nothing any more (its entity's buckets have all left every window)."""
    table_dir = LakeLayout.of(settings).features_dir(view.name)
    jk = list(view.join_keys)
    found, parts = 0, []
    want = keys.num_rows
    for i in range(1, days + 1):
        old = _read(_date_files(table_dir / f"date={(day - timedelta(days=i)).isoformat()}"))
        if old is None or not old.num_rows:
            continue
        ks = keys.select(jk).cast(pa.schema([old.schema.field(k) for k in jk]))
        if parts:  # only the entities not found yet
            seen = pa.concat_tables(parts).select(jk)
            ks = ks.join(seen.cast(ks.schema), keys=jk, join_type="left anti")
        mine = old.join(ks, keys=jk, join_type="inner").select(old.schema.names)
        if mine.num_rows:
            ends = _last_rows(mine.sort_by([(k, "ascending") for k in jk] + [(TS, "ascending")]), jk)
            parts.append(ends)
            found += ends.num_rows
        if found >= want:
            break
    if not parts:
        return None
    schema = parts[0].schema
    return pa.concat_tables([t.cast(schema) for t in parts])


def _last_rows(table: pa.Table, jk: list[str]) -> pa.Table:
    """The last row of each entity in a table sorted by entity and time."""
    df = table.to_pandas()
    return pa.Table.from_pandas(df.groupby(jk, sort=False, dropna=False).tail(1), schema=table.schema,
                                preserve_index=False)


def add_delta(view: WindowedView, current: dict[str, pa.Table | None], prev: pa.Table | None, keys: pa.Table,
              delta: pa.Table, lo: datetime) -> tuple[pa.Table, int]:
    """The affected entities' rows from ``lo`` on, over the old events and the new ones:
    their current rows (``current``: the table's dates from ``lo``; ``prev``: their latest
    row before) plus the new events' rows (``delta``), by ``etl.windows.add_rows``.
    Returns them and how many of them are rows the table did not have."""
    jk = list(view.join_keys)
    olds = []
    for old in current.values():
        if old is not None and old.num_rows:
            ks = keys.select(jk).cast(pa.schema([old.schema.field(k) for k in jk]))
            olds.append(old.join(ks, keys=jk, join_type="inner").select(old.schema.names))
    schema = (olds[0] if olds else delta).schema
    in_range = sum(t.num_rows for t in olds)
    parts = ([prev] if prev is not None else []) + olds
    old = pa.concat_tables([t.select(schema.names).cast(schema) for t in parts]) if parts else delta.slice(0, 0)
    rows = windows.add_rows(view, _frame(old), _frame(delta.select(schema.names).cast(schema)))
    rows = rows[rows[TS] >= pd.Timestamp(lo)]
    out = pa.Table.from_pandas(rows, preserve_index=False).select(schema.names).cast(schema)
    return out, out.num_rows - in_range


def _frame(t: pa.Table) -> pd.DataFrame:
    df = t.to_pandas()
    df[TS] = pd.to_datetime(df[TS], utc=True)
    return df


# --- the merge: storage only, one output date at a time


def _date_files(d: Path) -> list[Path]:
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.name.endswith(".parquet") and not p.name.startswith((".", "_")))


def _read(files: list[Path]) -> pa.Table | None:
    if not files:
        return None
    # One thread per file: the merges of several views run in parallel already.
    tables = [pq.read_table(f, use_threads=False) for f in files]
    schema = tables[0].schema
    return pa.concat_tables([t.select(schema.names).cast(schema) for t in tables])


def read_dates(settings: Settings, view: WindowedView, out_start: date, out_end: date) -> dict[str, pa.Table | None]:
    """The table's current rows of each date in ``[out_start, out_end)`` (None: no file)."""
    table_dir = LakeLayout.of(settings).features_dir(view.name)
    out, day = {}, out_start
    while day < out_end:
        name = f"date={day.isoformat()}"
        out[name] = _read(_date_files(table_dir / name))
        day += timedelta(days=1)
    return out


def merge_view(settings: Settings, view: WindowedView, keys: pa.Table, rows: pa.Table,
               out_start: date, out_end: date, current: dict[str, pa.Table | None] | None = None) -> dict[str, int]:
    """Rebuild the table's dates in ``[out_start, out_end)``: the current rows of entities
    not in ``keys`` (``current``: as ``read_dates`` gives them, else read here), plus
    ``rows``, the affected entities' rows; commit and apply. Returns rows carried over and
    dates rewritten."""
    table_dir = LakeLayout.of(settings).features_dir(view.name)
    stage = staging_dir(settings, view.name)
    shutil.rmtree(stage, ignore_errors=True)
    merged_dir = stage / "merged"
    jk = list(view.join_keys)
    row_dates = pc.cast(pc.cast(rows.column(TS), pa.timestamp("us", tz="UTC")), pa.date32()) if rows.num_rows else None
    replace, delete, carried = [], [], 0
    day = out_start
    while day < out_end:
        name = f"date={day.isoformat()}"
        old = current[name] if current is not None else _read(_date_files(table_dir / name))
        new = rows.filter(pc.equal(row_dates, pa.scalar(day, pa.date32()))) if row_dates is not None else None
        day += timedelta(days=1)
        kept = None
        if old is not None and old.num_rows:
            kept = old.filter(pc.invert(_isin(old, jk, keys)))
            if kept.num_rows == old.num_rows and (new is None or new.num_rows == 0):
                continue  # no affected entity has a row on this date, before or after
        parts = [t for t in (kept, new) if t is not None and t.num_rows]
        if not parts:
            if old is not None:
                delete.append(name)
            continue
        schema = (old if old is not None else new).schema
        merged = pa.concat_tables([t.select(schema.names).cast(schema) for t in parts])
        if new is not None and new.num_rows:  # (else: the current file's rows, in its order, less some)
            merged = merged.sort_by([(k, "ascending") for k in jk] + [(TS, "ascending")])
        carried += kept.num_rows if kept is not None else 0
        out = merged_dir / name
        out.mkdir(parents=True, exist_ok=True)
        pq.write_table(merged, out / f"part-00000-{uuid.uuid4()}.c000.zstd.parquet", compression="zstd")
        replace.append(name)
    journal = stage / JOURNAL
    tmp = journal.with_name(JOURNAL + ".tmp")
    tmp.write_text(json.dumps({"table": str(table_dir), "replace": replace, "delete": delete}))
    os.replace(tmp, journal)  # the commit point
    _apply(stage)
    return {"rows_carried": carried, "dates_rewritten": len(replace) + len(delete)}


def _apply(stage: Path) -> None:
    """Roll a committed journal forward (idempotent: a crash anywhere in it is redone)."""
    j = json.loads((stage / JOURNAL).read_text())
    table = Path(j["table"])
    old = stage / "replaced"
    old.mkdir(parents=True, exist_ok=True)
    for name in j["replace"] + j["delete"]:
        src, dst = stage / "merged" / name, table / name
        if name in j["replace"] and not src.exists():
            continue  # swapped in already
        if dst.exists():
            if (old / name).exists():
                shutil.rmtree(old / name)
            os.replace(dst, old / name)
        if name in j["replace"]:
            table.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
    (stage / JOURNAL).unlink()
    shutil.rmtree(stage, ignore_errors=True)


def recover(settings: Settings) -> list[str]:
    """Finish what a crashed run committed, drop what it did not; the views touched."""
    root = LakeLayout.of(settings).root / STAGING
    if not root.is_dir():
        return []
    done = []
    for stage in sorted(p for p in root.iterdir() if p.is_dir()):
        if (stage / JOURNAL).exists():
            _apply(stage)
        else:
            shutil.rmtree(stage, ignore_errors=True)
        done.append(stage.name)
    return done


def keys_table(keys: DataFrame) -> pa.Table:
    """The affected keys on the driver (small: the new events' entities)."""
    pdf = keys.toPandas()
    return pa.Table.from_pandas(pdf, preserve_index=False)


def has_table(settings: Settings, view: WindowedView) -> bool:
    """Does the view have a table of its current columns (else a run computes every entity:
    a new view, or one whose features changed, has no rows to carry over)?"""
    root = LakeLayout.of(settings).features_dir(view.name)
    if not root.is_dir():
        return False
    newest = max((p for p in root.rglob("part-*") if p.name.endswith(".parquet")), default=None,
                 key=lambda p: (p.parent.name, p.name))
    return newest is not None and pq.read_schema(newest).names == [*view.join_keys, TS, *view.features]



# --- the in-process path: a small incremental run without Spark jobs
#
# An incremental run's data are small (the new files, and the raw rows of the entities they
# touch), and a Spark job on small data costs its fixed overhead — ~0.3-1.5 s a job, a dozen
# jobs a run — not rows. When every view of the run is computed by entity and none needs
# a join against every old event (an enriched view that is not additive), the run reads
# the files with Arrow (the same file list, schema and landing watermark as ``read_raw``),
# keeps one copy per id as ``first_landed`` does, and computes each view's rows with the
# same kernel Spark runs per partition (``etl.windows.events_rows``): the same numbers, as
# the tables' bit-for-bit tests check against a full (Spark) backfill.


def _arrow_schema(contract: str) -> pa.Schema:
    """The lake's schema of the contract's topic (what ``read_raw`` reads), without the date
    partition column and with every field nullable (older files lack newer fields)."""
    from skewless.lake import topic_schema

    s = topic_schema(CONTRACTS[contract])
    return pa.schema([pa.field(f.name, f.type, nullable=True) for f in s if f.name != "date"])


def read_files(files: list[Path], contract: str, columns: list[str], where: Any = None) -> pa.Table:
    """The rows of ``files`` (raw files of ``contract``) with ``columns``, filtered by the
    dataset expression ``where`` (pushed down to the Parquet reader)."""
    import pyarrow.dataset as ds

    schema = _arrow_schema(contract)
    cols = [c for c in columns if c in schema.names]
    if not files:
        return pa.table({c: pa.array([], schema.field(c).type) for c in cols})
    return ds.dataset([str(f) for f in files], schema=schema, format="parquet").to_table(columns=cols, filter=where)


def _ids_with_copies(ids: pa.Array) -> set:
    counts = pa.table({"i": ids}).group_by("i").aggregate([("i", "count")])
    return set(counts.filter(pc.greater(counts.column("i_count"), 1)).column("i").to_pylist())


def first_landed_arrow(table: pa.Table, contract: str) -> pa.Table:
    """One row per event id: the copy landed first (least ``LANDING_ORDER``), as
    ``etl.transforms.first_landed`` keeps it."""
    from skewless.lake import LANDING_ORDER

    idf = CONTRACTS[contract].id_field
    if table.num_rows == len(pc.unique(table.column(idf))):
        return table
    # (The landing-order columns are never null: every landed row has them.)
    order = pc.sort_indices(table, sort_keys=[(idf, "ascending")] + [(c, "ascending") for c in LANDING_ORDER])
    t = table.take(order)
    ids = t.column(idf).to_numpy(zero_copy_only=False)
    import numpy as np

    first = np.r_[True, ids[1:] != ids[:-1]] if len(ids) else np.zeros(0, bool)
    return t.filter(pa.array(first))


def _isin(table: pa.Table, cols: list[str], keys: pa.Table) -> "Any":
    """A boolean mask: rows of ``table`` whose ``cols`` are a row of ``keys``."""
    import numpy as np

    if len(cols) == 1:
        return pc.is_in(table.column(cols[0]),
                        value_set=pc.unique(keys.column(cols[0])).cast(table.schema.field(cols[0]).type))
    tagged = table.select(cols).append_column("_row", pa.array(np.arange(table.num_rows)))
    ks = keys.select(cols).cast(pa.schema([table.schema.field(c) for c in cols]))
    hit = tagged.join(ks, keys=cols, join_type="left semi", use_threads=False).column("_row").to_numpy()
    mask = np.zeros(table.num_rows, bool)
    mask[hit] = True
    return pa.array(mask)


def local_source_events(view: WindowedView, frames: dict[str, pa.Table]) -> pd.DataFrame:
    """``etl.transforms.source_events`` over Arrow tables (one copy per id): the view's
    events as a frame with the time column ``_ts``."""
    src = view.source
    t = frames[src.contract]
    if src.where:
        t = t.filter(pc.fill_null(t.column(src.where), False))
    if src.enrich:
        other, key, columns = src.enrich
        o = frames[other].select([key, *columns])
        o = o.filter(pa.array(first_of(o.column(key))))  # dropDuplicates([key])
        t = t.join(o, keys=key, join_type="inner")
    return t.rename_columns([("_ts" if c == src.time_column else c) for c in t.column_names]).to_pandas()


def first_of(values: Any) -> Any:
    import numpy as np

    v = values.to_numpy(zero_copy_only=False) if hasattr(values, "to_numpy") else np.asarray(values)
    _, idx = np.unique(v, return_index=True)
    mask = np.zeros(len(v), bool)
    mask[idx] = True
    return mask


def local_rows(view: WindowedView, events: pd.DataFrame, since: datetime, until: datetime) -> pa.Table:
    """``etl.transforms.windowed_features(view, events, since, until).toArrow()`` computed
    in this process: the same kernel over every entity at once (each entity's rows depend on
    its own events only), typed as Spark types the table."""
    from etl.transforms import to_hop

    lo = pd.Timestamp(since - view.max_window - view.hop_td)
    ts = pd.to_datetime(events["_ts"], utc=True)
    events = events[ts >= lo]
    columns = list(dict.fromkeys([*view.join_keys, "_ts", *(a.column for a in view.aggregations if a.column)]))
    types = {"int64": pa.int64(), "float64": pa.float64(), "string": pa.string(), "bool": pa.bool_()}
    schema = pa.schema([pa.field(k, pa.string()) for k in view.join_keys] + [pa.field(TS, pa.timestamp("us", tz="UTC"))]
                       + [pa.field(a.feature_name, types[a.output_type]) for a in view.aggregations])
    if events.empty:
        return schema.empty_table()
    rows = windows.events_rows(view, events[columns].reset_index(drop=True), to_hop(view, since), to_hop(view, until))
    if rows.empty:
        return schema.empty_table()
    rows = rows.copy()
    rows[TS] = pd.to_datetime(rows[TS], utc=True).astype("datetime64[us, UTC]")
    return pa.Table.from_pandas(rows[schema.names], preserve_index=False).cast(schema)


def local_events_profiles(views: list[WindowedView], events: pd.DataFrame, lo: datetime, hi: datetime) -> dict[str, dict]:
    """``etl.batch.events_profiles`` of several views reading the same events (a frame)."""
    import numpy as np

    t = windows.micros(events["_ts"]) if len(events) else np.zeros(0, "int64")
    lo_us, hi_us = int(lo.timestamp() * 1e6), int(hi.timestamp() * 1e6)
    t = t[t < hi_us]
    newest = int(t.max()) if len(t) else None
    out = {}
    for v in views:
        h = int(v.hop_td.total_seconds() * 1e6)
        out[v.name] = {"events": int(len(t)), "events_in_range": int(((t >= lo_us) & (t < hi_us - h)).sum()),
                       "newest_event": None if newest is None else newest / 1e6, "range_end": hi.timestamp()}
    return out


# Above this many newly landed rows an incremental run uses Spark: the in-process path holds
# the new events and their entities' events in memory (1M events: ~0.5 GB at most).
LOCAL_MAX_NEW_EVENTS = 1_000_000


class LocalRun:
    """An in-process incremental run's inputs (``plan_local``): per view its source events
    (a frame: the affected entities' or, for an additive view, the new events'), per group
    its affected keys, the views that add, the retried ids, the rows read per contract."""

    def __init__(self) -> None:
        self.events: dict[str, pd.DataFrame] = {}
        self.keys: dict[tuple, pa.Table] = {}
        self.additive: list[WindowedView] = []
        self.retried: dict[str, set] = {}
        self.copies: dict[str, int] = {}
        self.ids: dict[str, int] = {}


def plan_local(settings: Settings, views: tuple[WindowedView, ...], contracts: tuple[str, ...],
               columns: dict[str, list[str]], read_start: date, out_end: date, since: float, t0: float,
               phase: Any) -> LocalRun | None:
    """Read what an incremental run of ``views`` (all computed by entity) needs, with Arrow,
    or None when the run needs Spark: a view with a join against every old event (an
    enriched view that cannot add: its affected keys come from that join)."""
    layout = LakeLayout.of(settings)
    run = LocalRun()
    listed = {c: [f for f in layout.raw_files(getattr(settings.topics, c), read_start, out_end) if f.landed_at < t0]
              for c in contracts}
    landed = sum(pq.ParquetFile(f.path).metadata.num_rows for c in contracts for f in listed[c] if f.landed_at >= since)
    if landed > LOCAL_MAX_NEW_EVENTS:  # a large catch-up: Spark's job (memory bounded by partitions)
        return None
    fresh: dict[str, pa.Table] = {}
    new_retried: dict[str, set] = {}
    compacted: dict[str, bool] = {}
    with phase("new_events"):
        for c in contracts:
            idf = CONTRACTS[c].id_field
            new = [f for f in listed[c] if f.landed_at >= since]
            compacted[c] = any(f.compacted for f in new)
            ids = read_files([f.path for f in new], c, [idf]).column(idf)
            days = {f.date for f in new}
            # Every landed copy of the new ids (a retried event's copies share its date).
            import pyarrow.dataset as ds

            fresh[c] = read_files([f.path for f in listed[c] if f.date in days], c, columns[c],
                                  ds.field(idf).isin(pc.unique(ids)))
            new_retried[c] = _ids_with_copies(fresh[c].column(idf))
    with phase("retried_index"):
        for c in contracts:
            known = load_retried(settings, c)
            if known is None:  # once per lake: every id's copies
                idf = CONTRACTS[c].id_field
                known = _ids_with_copies(read_files([f.path for f in listed[c]], c, [idf]).column(idf))
            run.retried[c] = known | new_retried[c]
    for v in views:
        mine = [v.source.contract, *([v.source.enrich[0]] if v.source.enrich else [])]
        if (windows.additive(v) and not any(new_retried[c] or compacted[c] for c in mine)
                and not written_since(settings, v, since)):
            run.additive.append(v)
    if any(v.source.enrich and v not in run.additive for v in views):
        return None
    import pyarrow.dataset as ds

    conditions: dict[str, dict[Any, tuple[list[str], pa.Table]]] = {c: {} for c in contracts}
    with phase("affected_entities"):
        for v in views:
            g = group_of(v)
            if v in run.additive:
                if v.source.enrich:  # its new pairs: rows holding a new id on either side
                    other, key, _ = v.source.enrich
                    ids = pa.concat_arrays([fresh[v.source.contract].column(CONTRACTS[v.source.contract].id_field)
                                            .combine_chunks(),
                                            fresh[other].column(CONTRACTS[other].id_field).combine_chunks()])
                    idt = pa.table({key: pc.unique(ids)})
                    conditions[v.source.contract][("delta", v.name)] = ([key], idt)
                    conditions[other][("delta", v.name)] = ([key], idt)
                continue
            if g not in run.keys:
                jk = list(v.join_keys)
                run.keys[g] = fresh[v.source.contract].select(jk).group_by(jk).aggregate([])
                conditions[v.source.contract][g] = (jk, run.keys[g])
    rows: dict[Any, dict[str, pa.Table]] = {}
    with phase("their_events"):
        for c, conds in conditions.items():
            if not conds:
                continue
            idf = CONTRACTS[c].id_field
            expr = None
            for cols, keys in conds.values():
                if len(cols) == 1:
                    e = ds.field(cols[0]).isin(pc.unique(keys.column(cols[0])))
                else:  # several keys: each column's values (rows refined below)
                    e = reduce(lambda a, b: a & b, [ds.field(k).isin(pc.unique(keys.column(k))) for k in cols])
                expr = e if expr is None else expr | e
            if run.retried[c]:  # every copy of a retried id (a copy may hold another entity)
                expr = expr | ds.field(idf).isin(pa.array(sorted(run.retried[c]), pa.string()))
            found = read_files([f.path for f in listed[c]], c, columns[c], expr)
            run.copies[c] = found.num_rows
            run.ids[c] = len(pc.unique(found.column(idf)))
            for g, (cols, keys) in conds.items():
                hit = pc.unique(found.filter(_isin(found, cols, keys)).column(idf))
                mine = found.filter(pc.is_in(found.column(idf), value_set=hit))
                rows.setdefault(g, {})[c] = first_landed_arrow(mine, c)
        shared: dict[Any, pd.DataFrame] = {}  # views of one source (and keys) share their events
        for v in views:
            g = group_of(v)
            if v in run.additive:
                k = ("delta", v.name) if v.source.enrich else ("delta", v.source)
                if k not in shared:
                    # An enriched view's new pairs; else one copy of each new id (no retry
                    # among them): the new events themselves.
                    shared[k] = local_source_events(v, rows[k] if v.source.enrich else fresh)
                run.events[v.name] = shared[k]
                continue
            if g not in shared:
                ev = local_source_events(v, rows[g])
                jk = list(v.join_keys)
                keep = _isin(pa.Table.from_pandas(ev[jk], preserve_index=False), jk, run.keys[g])
                shared[g] = ev[keep.to_numpy(zero_copy_only=False)].reset_index(drop=True)
            run.events[v.name] = shared[g]
    return run
