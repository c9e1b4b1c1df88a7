"""``skewless lake compact``: rewrite a date partition's small raw files into large ones,
atomically for every reader (the paths and the visibility rule are ``skewless.lake_layout``'s).

Protocol for one date partition of one topic (``run`` below):

1. pack the partition's small files (``LakeLayout.raw_files``, smaller than
   ``compaction.small_file_bytes``) into bins of about ``compaction.target_file_bytes``;
2. per bin, write the rows of its inputs, every column and every row as it is
   (``_ingested_at``, ``_kafka_partition``, ``_kafka_offset`` included: the landing order
   and ``ingest verify``'s offsets are those of the inputs), sorted by event time, under a
   hidden temp name; fsync; check the row count; rename to ``compacted-<id>-<n>.parquet``
   (fsync the directory). Until step 3 no reader lists it (no committed manifest names it);
3. **commit**: write the compaction manifest ``_compactions/<topic>/date=D/<id>.json``
   (temp name, fsync, atomic rename, fsync): it names the inputs, and each output with its
   rows and the latest landing time of its inputs (so the ETL's incremental planner does
   not take rewritten rows for newly landed ones). From here on readers list the outputs
   instead of the inputs;
4. delete the inputs once the commit is ``compaction.grace_s`` old (a later run, or this
   one when the grace is 0): a reader that listed them before the commit is mid-scan.

A crash (kill -9) at any step leaves the lake valid: before 3 the outputs are orphans no
reader lists, and the next run deletes them; after 3 every reader lists the outputs, and
the next run deletes what is left of the inputs once the grace is over. One compaction
runs per topic at a time (a lock file); the consumer may land new files into the same
dates meanwhile: they are not inputs, so they stay listed.

Failpoints (``ingestion.faults``): ``compact_output_written`` (temp output fsynced),
``compact_before_commit`` (outputs renamed, no manifest), ``compact_after_commit``,
``compact_mid_delete`` (after the first input of a date was deleted).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import time
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from ingestion.faults import crash_point
from skewless.contracts import contract_for_topic
from skewless.durable import fsync
from skewless.errors import DataError, ServiceError
from skewless.lake_layout import COMPACTED_PREFIX, TMP_PREFIX, LakeLayout, RawFile
from skewless.settings import Settings


@contextmanager
def _locked(layout: LakeLayout, topic: str) -> Iterator[None]:
    """One compaction (or recovery) of a topic at a time."""
    path = layout.root / "_compactions" / topic / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ServiceError(f"another compaction of topic {topic} is running (it holds {path})",
                               "wait for it to finish, then run again") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _new_id() -> str:
    """Sorts by time: a date's manifests are read oldest first."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}-{secrets.token_hex(3)}"


def recover(layout: LakeLayout, topic: str, grace_s: float, now: float | None = None) -> dict[str, int]:
    """Finish or undo what a crashed (or earlier) compaction left: delete the outputs of
    compactions that never committed and their temp files, and the inputs of committed
    ones whose grace is over. Call with the topic's lock held."""
    now = time.time() if now is None else now
    done = {"orphans_removed": 0, "inputs_deleted": 0}
    for day in layout.raw_dates(topic):
        committed = layout.compactions(topic, day)
        ids = {c["id"] for c in committed}
        replaced = {i for c in committed for i in c["inputs"]}
        for c in committed:
            for o in c["outputs"]:
                if o["path"] not in replaced and not (layout.root / o["path"]).exists():
                    raise DataError(f"compaction {c['id']} of {topic} {day} names {o['path']}, which is missing "
                                    "(the lake was altered)", "restore the file; `skewless ingest verify` shows "
                                    "what the lake is missing")
            if now - c["committed_at"] >= grace_s:
                for rel in c["inputs"]:
                    p = layout.root / rel
                    if p.exists():
                        p.unlink()
                        done["inputs_deleted"] += 1
                        crash_point("compact_mid_delete")
        d = layout.date_dir(topic, day)
        dirty = False
        for p in d.iterdir():
            name = p.name
            if name.startswith(TMP_PREFIX + COMPACTED_PREFIX) or (
                    name.startswith(COMPACTED_PREFIX) and _id_of(name) not in ids):
                p.unlink(missing_ok=True)
                done["orphans_removed"] += 1
                dirty = True
        if dirty or done["inputs_deleted"]:
            fsync(d)
    return done


def _id_of(output_name: str) -> str:
    """``compacted-<id>-<n>.parquet`` -> ``<id>`` (the id holds one ``-`` itself)."""
    return output_name[len(COMPACTED_PREFIX):].rsplit("-", 1)[0]


def _bins(files: list[tuple[RawFile, int]], target: int) -> list[list[tuple[RawFile, int]]]:
    """Consecutive runs (in landing order) of about ``target`` bytes; a run of one file is
    not worth rewriting."""
    out: list[list[tuple[RawFile, int]]] = [[]]
    size = 0
    for f, n in files:
        if out[-1] and size + n > target:
            out.append([])
            size = 0
        out[-1].append((f, n))
        size += n
    return [b for b in out if len(b) >= 2]


def _write_output(layout: LakeLayout, topic: str, day: date, cid: str, n: int, inputs: list[RawFile],
                  time_field: str, settings: Settings) -> dict[str, Any]:
    """Step 2 for one bin: the inputs' rows, sorted by event time, under the output's final
    name (an orphan until the manifest commits); returns its manifest entry."""
    tables = [pq.ParquetFile(f.path).read() for f in inputs]
    rows = sum(t.num_rows for t in tables)
    table = pa.concat_tables(tables, promote_options="default")
    table = table.sort_by([(time_field, "ascending"), ("_kafka_partition", "ascending"),
                           ("_kafka_offset", "ascending")])
    if table.num_rows != rows:  # cannot happen; if it ever did, nothing is committed
        raise DataError(f"compaction of {topic} {day}: {table.num_rows} rows written for {rows} read")
    d = layout.date_dir(topic, day)
    final = d / f"{COMPACTED_PREFIX}{cid}-{n}.parquet"
    tmp = d / (TMP_PREFIX + final.name)
    pq.write_table(table, tmp, compression=settings.ingest.compression,
                   row_group_size=settings.ingest.row_group_records, write_statistics=True)
    fsync(tmp)
    crash_point("compact_output_written")
    os.rename(tmp, final)
    return {"path": str(final.relative_to(layout.root)), "rows": rows, "bytes": final.stat().st_size,
            "landed_at": max(f.landed_at for f in inputs)}


def _commit(layout: LakeLayout, topic: str, day: date, body: dict) -> Path:
    """Step 3: the compaction manifest, written atomically: the commit point."""
    d = layout.compactions_dir(topic, day)
    d.mkdir(parents=True, exist_ok=True)
    final = d / f"{body['id']}.json"
    tmp = d / (TMP_PREFIX + final.name)
    with open(tmp, "w") as fh:
        json.dump(body, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.rename(tmp, final)
    fsync(d)
    return final


def compact_date(layout: LakeLayout, settings: Settings, topic: str, day: date, time_field: str) -> dict[str, Any]:
    """Compact one date partition (steps 1-3); returns its figures. Call with the lock held."""
    cfg = settings.compaction
    files = [(f, f.path.stat().st_size) for f in layout.raw_files(topic, day, day + timedelta(days=1))]
    small = sorted(((f, n) for f, n in files if n < cfg.small_file_bytes), key=lambda x: (x[0].landed_at, x[0].path.name))
    bins = _bins(small, cfg.target_file_bytes)
    if not bins:
        return {"files_before": len(files), "files_after": len(files), "inputs": 0, "outputs": 0}
    cid = _new_id()
    outputs = [_write_output(layout, topic, day, cid, n, [f for f, _ in b], time_field, settings)
               for n, b in enumerate(bins)]
    fsync(layout.date_dir(topic, day))
    inputs = [str(f.path.relative_to(layout.root)) for b in bins for f, _ in b]
    crash_point("compact_before_commit")
    _commit(layout, topic, day, {"id": cid, "topic": topic, "date": day.isoformat(), "committed_at": time.time(),
                                 "inputs": inputs, "outputs": outputs})
    crash_point("compact_after_commit")
    return {"files_before": len(files), "files_after": len(files) - len(inputs) + len(outputs),
            "inputs": len(inputs), "outputs": len(outputs),
            "bytes_in": sum(n for b in bins for _, n in b), "bytes_out": sum(o["bytes"] for o in outputs),
            "rows": sum(o["rows"] for o in outputs)}


def run(settings: Settings, topics: list[str] | None = None, before: date | None = None,
        on_progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Compact every date partition (before ``before``, when given) of ``topics`` (default:
    every contract's topic): recover first, compact, then delete the inputs whose grace is over."""
    layout = LakeLayout.of(settings)
    by_contract = settings.topics.by_contract()
    topics = topics or list(by_contract.values())
    report: dict[str, Any] = {"topics": {}}
    for topic in topics:
        time_field = contract_for_topic(topic, by_contract).time_field
        with _locked(layout, topic):
            recovered = recover(layout, topic, settings.compaction.grace_s)
            days = [d for d in layout.raw_dates(topic) if before is None or d < before]
            per_date = {}
            for i, day in enumerate(days):
                per_date[day.isoformat()] = compact_date(layout, settings, topic, day, time_field)
                if on_progress:
                    on_progress(topic, i + 1, len(days))
            cleaned = recover(layout, topic, settings.compaction.grace_s)  # a grace of 0: delete inputs now
        touched = {d: v for d, v in per_date.items() if v["outputs"]}
        report["topics"][topic] = {
            "dates": len(days), "dates_compacted": len(touched),
            "files_before": sum(v["files_before"] for v in per_date.values()),
            "files_after": sum(v["files_after"] for v in per_date.values()),
            "inputs": sum(v["inputs"] for v in per_date.values()),
            "outputs": sum(v["outputs"] for v in per_date.values()),
            "rows_rewritten": sum(v.get("rows", 0) for v in per_date.values()),
            "bytes_in": sum(v.get("bytes_in", 0) for v in per_date.values()),
            "bytes_out": sum(v.get("bytes_out", 0) for v in per_date.values()),
            "orphans_removed": recovered["orphans_removed"] + cleaned["orphans_removed"],
            "inputs_deleted": recovered["inputs_deleted"] + cleaned["inputs_deleted"],
        }
    report["grace_s"] = settings.compaction.grace_s
    return report
