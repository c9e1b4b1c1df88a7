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
    """Every row of ``frame`` whose event id has a copy in ``matching``."""
    idf = CONTRACTS[contract].id_field
    return frame.join(matching.select(idf).distinct(), idf, "left_semi")


def entity_frames(view: WindowedView, raw: dict[str, DataFrame], keys: DataFrame) -> dict[str, DataFrame]:
    """The raw rows (every landed copy, not yet deduplicated) that can make a source event
    of an entity in ``keys``: with ``unique_events`` and ``source_events`` they give exactly
    the events a full run gives those entities (plus maybe some of other entities, which
    ``entity_events`` drops)."""
    src = view.source
    jk = list(view.join_keys)
    if not src.enrich:
        c = src.contract
        return {c: _copies_of(raw[c], raw[c].join(keys, jk, "left_semi"), c)}
    other, key, columns = src.enrich
    theirs = [k for k in jk if k in columns]
    here = [k for k in jk if k not in columns]
    o = raw[other]
    if theirs:
        o = _copies_of(o, o.join(keys.select(*theirs).distinct(), theirs, "left_semi"), other)
    c = raw[src.contract]
    matching = c.join(o.select(key).distinct(), key, "left_semi")
    if here:
        matching = matching.join(keys.select(*here).distinct(), here, "left_semi")
    return {src.contract: _copies_of(c, matching, src.contract), other: o}


def entity_events(view: WindowedView, frames: dict[str, DataFrame], keys: DataFrame) -> DataFrame:
    """The view's source events of the entities in ``keys`` (``frames`` as ``entity_frames``
    gives them, before deduplication)."""
    return source_events(view.source, unique_events(frames)).join(keys, list(view.join_keys), "left_semi")


def read_counts(frames: list[dict[str, DataFrame]], contracts: tuple[str, ...]) -> tuple[dict[str, int], dict[str, int]]:
    """Per contract: raw rows the run read (each landed row once, whichever views read it)
    and copies dropped among them."""
    from skewless.lake import LANDING_ORDER

    read, dropped = {}, {}
    for c in contracts:
        parts = [f[c].select(CONTRACTS[c].id_field, *LANDING_ORDER) for f in frames if c in f]
        if not parts:
            read[c] = dropped[c] = 0
            continue
        row = reduce(DataFrame.unionByName, parts).distinct().agg(
            F.count(F.lit(1)).alias("rows"), F.countDistinct(CONTRACTS[c].id_field).alias("ids")).first()
        read[c], dropped[c] = row["rows"], row["rows"] - row["ids"]
    return read, dropped


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
    root = LakeLayout.of(settings).features_dir(view.name)
    return root.is_dir() and any(p.name.endswith(".parquet") for p in root.rglob("part-*"))

