"""Incremental runs of the batch job: recompute only the entities with new events.

A view's rows for one entity depend on that entity's events only (``etl.windows``). Events
landed since the previous run can therefore change rows of the entities they belong to,
and of no other — and only from the earliest date they land in (``out_start``: a row at
``t`` reads events before ``t``). Every other row of the tables, in particular the rows
where OLD events leave their windows after ``out_start`` (the previous run wrote them:
every run writes up to its events' last decay point), is already right.

So an incremental run (``etl.batch.run_batch`` without ``start``, after a first run):

1. **affected entities** (``affected_keys``): the join keys of every landed copy of every
   event id found in a newly landed file (all copies, so a later copy that would win the
   first-landed rule, or one holding another key, cannot be missed); for an enriched source
   (chargebacks get their merchant from the transaction) both sides of the join: new labels
   with any copy of their transaction, and any label of a new transaction;
2. **their events** (``entity_frames``): the raw rows over the usual read range that can
   make one of their source events — every copy of every id having a copy of theirs, so
   ``first_landed`` keeps the same copy as a full run does — then the same ``unique_events``,
   ``source_events`` and ``windowed_features`` (Spark, ``applyInPandas`` of ``etl.windows``)
   as a backfill, restricted to the affected entities. The values are the same numbers as
   a backfill's: the kernel computes each entity from its own buckets only;
3. **merge** (``merge_view``): Spark writes the recomputed rows to a staging directory; each
   output date of the table is then rebuilt from its current file minus the affected
   entities' rows plus their recomputed rows (Arrow, file by file: it is storage, not
   feature compute; a date without affected rows is left alone) and swapped in.

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
from datetime import date, timedelta
from functools import reduce
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

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

    Copies are rare: one scan of the ids only counts them (``copies``, ``ids``: of the ids
    read). Without any, every id read has one copy — read already, deduplicated already;
    otherwise the ids with several copies are read whole once more and each group gets
    every copy of its ids (``rows``)."""

    def __init__(self, raw: DataFrame, contract: str, conditions: dict[Any, Condition]):
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
        # Landed copies of the ids found (the rows found are some of them): one per id means
        # the rows found are every copy there is, one each.
        counts = (raw.select(self.idf).join(self.found.select(self.idf).distinct(), self.idf, "left_semi")
                  .groupBy(self.idf).count())
        agg = counts.agg(F.sum("count").alias("copies"), F.count(F.lit(1)).alias("ids")).first()
        self.copies, self.ids = int(agg["copies"] or 0), int(agg["ids"] or 0)
        self.extra: DataFrame | None = None
        self.retried: list[Any] = []
        if self.copies != self.ids:
            self.retried = [r[0] for r in counts.where(F.col("count") > 1).select(self.idf).collect()]
            self.extra = raw.where(F.col(self.idf).isin(self.retried)).persist()
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


def entity_events(views: list[WindowedView], raw: dict[str, DataFrame], keys: dict[Any, DataFrame]
                  ) -> tuple[dict[Any, DataFrame], dict[str, EntityRows]]:
    """Per group (``group_of``; ``keys``: its affected keys), the source events of its
    affected entities — exactly those a full run gives them — and the rows read, per contract."""
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
        if conditions:
            read[c] = EntityRows(raw[c], c, conditions)
    out = {}
    for g, v in first.items():
        contracts = [v.source.contract, *([v.source.enrich[0]] if v.source.enrich else [])]
        frames = {c: read[c].rows(g) for c in contracts}
        frames = {c: f if read[c].deduplicated() else unique_events({c: f})[c] for c, f in frames.items()}
        out[g] = source_events(v.source, frames).join(F.broadcast(keys[g]), list(v.join_keys), "left_semi")
    return out, read


# --- the merge: storage only, one output date at a time


def _date_files(d: Path) -> list[Path]:
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.name.endswith(".parquet") and not p.name.startswith((".", "_")))


def _read(files: list[Path]) -> pa.Table | None:
    if not files:
        return None
    tables = [pq.read_table(f) for f in files]
    schema = tables[0].schema
    return pa.concat_tables([t.select(schema.names).cast(schema) for t in tables])


def merge_view(settings: Settings, view: WindowedView, keys: pa.Table, staged_rows: Path,
               out_start: date, out_end: date) -> dict[str, int]:
    """Rebuild the table's dates in ``[out_start, out_end)``: the current rows of entities
    not in ``keys``, plus the staged recomputed rows (Spark's output, ``date=`` partitions);
    commit and apply. Returns rows carried over and dates rewritten."""
    table_dir = LakeLayout.of(settings).features_dir(view.name)
    stage = staging_dir(settings, view.name)
    merged_dir = stage / "merged"
    jk = list(view.join_keys)
    replace, delete, carried = [], [], 0
    day = out_start
    while day < out_end:
        name = f"date={day.isoformat()}"
        day += timedelta(days=1)
        old = _read(_date_files(table_dir / name))
        new = _read(_date_files(staged_rows / name))
        kept = None
        if old is not None and old.num_rows:
            ks = keys.select(jk).cast(pa.schema([old.schema.field(k) for k in jk]))
            kept = old.join(ks, keys=jk, join_type="left anti").select(old.schema.names)
            if kept.num_rows == old.num_rows and (new is None or new.num_rows == 0):
                continue  # no affected entity has a row on this date, before or after
        parts = [t for t in (kept, new) if t is not None and t.num_rows]
        if not parts:
            if old is not None:
                delete.append(name)
            continue
        schema = (old if old is not None else new).schema
        merged = pa.concat_tables([t.select(schema.names).cast(schema) for t in parts])
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

