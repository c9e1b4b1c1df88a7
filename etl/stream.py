"""``skewless etl stream``: the streaming feature job, Kafka -> online store, exact and decaying.

A Spark Structured Streaming query reads the views' topics (Spark's Kafka source,
``read_committed``) and hands each micro-batch to ``Processor.apply``, which runs the
batch job's own window code (``etl.windows``) on it:

1. parse each record with its contract (what ingestion lands; an invalid record is
   skipped and counted: ingestion dead-letters it), drop retries (an id seen within
   ``stream.dedupe_horizon_s``), enrich (a label gets its transaction's merchant). The
   batch arrives as Arrow (``toArrow``) and a contract's records are read as one block
   (``skewless.contract_columns``, ingestion's block reader); what it does not accept goes
   through ``Contract.parse_message`` one by one, so the outcome is the per-record one;
2. per view, the new events' per-hop partials are merged with the affected entities'
   stored partials (``merge_partials``); each entity gets a timer: now, if a late event
   changed its current value, else the boundary where its first new bucket enters the
   windows (an earlier timer already set stays);
3. the partials, the timers, the dedupe ids and the Kafka offsets the batch reaches go to
   Redis in one transaction. The state, not Spark's checkpoint, says where the job stands:
   each run starts Spark's source at the state's offsets (``startingOffsets``), and a
   record below its partition's offset is a replay and skipped, so a job killed at any
   point applies each event exactly once, whatever Spark's checkpoint recorded. (Applying a
   batch on a worker thread while Spark reads the next, which this allows, was measured and
   gains nothing: the batch's Python work is 10-15x Spark's read of it, and the two threads
   share the GIL.) The partials this process wrote are also kept in memory
   (``StreamState.cache``, updated after each ``EXEC``): Redis is the truth a restart
   reads, the copy spares a round trip per entity on every batch and publication;
4. the ``Publisher`` wakes at the earliest timer, computes each due entity's row at the
   current boundary from its partials (``view_rows``), writes it into Feast's online
   store and sets the entity's timer to its next change point: when a bucket enters or
   leaves a window. So with no new events the values decay on time, and an entity whose
   buckets all left every window gets its last (decayed) row and is forgotten. After
   its commit a batch publishes everything due by the time it ends (with a short hop,
   its own events' boundaries have passed by then). (Publishing from the job's loop
   instead, overlapping Spark's next read, was measured and is slower: the publisher holds
   the lock the next batch's commit needs, and the two share the GIL.)

A row is computed when it is due, not ahead: an event costs its entity's partials, not
one stored row per coming change point (which the first version kept, at ~24 rows per
event for the 1 s views, rewritten with every event of the entity).

So the online value at ``t`` is the offline value at ``t`` (same code, same partials), up
to the time a micro-batch takes: an event is visible from its hop boundary, or from when
its micro-batch is applied if that is later. Late and out-of-order events are exact as far
as the state reaches: an event within the longest window of now changes the current and
coming values exactly; an older one cannot change any of them (it left every window) and
is left to the batch job, which writes it into the offline table.
"""

from __future__ import annotations

import gc
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from etl import windows
from etl.stream_state import NEEDS_ESCAPE, StreamState, decode_columns, encode_columns, entity_ids
from skewless import event_checks
from skewless.contract_columns import block_reader
from skewless.contracts import CONTRACTS, INT, TIME, InvalidEvent
from skewless.features.dsl import WindowedView
from skewless.settings import Settings

DAY_S = 86400
# A contract's records in a micro-batch are read as one block (``skewless.contract_columns``)
# from this many on: the block's fixed cost (~0.5 ms of CPU: the reader and its ~15 Arrow
# calls) is that of a few dozen records parsed one by one.
BLOCK_MIN_RECORDS = 64
RECORD_COLUMNS = ["topic", "partition", "offset", "key", "value", "timestamp"]
_TIME_NS = pd.DatetimeTZDtype("ns", "UTC")


@dataclass
class BatchReport:
    batch_id: int
    records: int = 0
    invalid: int = 0
    retries: int = 0
    too_late: int = 0
    parked: int = 0  # events waiting for what enriches them (counted per batch while they wait)
    applied: int = 0
    skipped: bool = False  # every record was applied before
    replayed: int = 0  # records below their partition's applied offset (read again after a restart)
    rows_published: int = 0
    timers: int = 0  # entities whose next change point was (re)scheduled
    first_timer: float | None = None  # the earliest of them (unix s)
    seconds: float = 0.0  # the whole micro-batch in the processor, then its phases:
    parse_s: float = 0.0  # contract validation and dedupe lookups
    compute_s: float = 0.0  # partials merged and rows computed (etl.windows), state loads included
    commit_s: float = 0.0  # the Redis transaction
    publish_s: float = 0.0  # due rows written into Feast's online store
    newest: dict[str, float] = field(default_factory=dict)


class _Fresh:
    """A view's partials as a batch committed them (``Columns`` grouped by entity): entity id
    -> its position, and its rows' range."""

    def __init__(self, eids: list[str], partials: windows.Columns, ends: np.ndarray):
        self.at = dict(zip(eids, range(len(eids))))
        self.partials, self.ends = partials, ends
        self.starts = np.r_[0, ends[:-1]] if len(ends) else ends

    def rows(self, positions: list[int]) -> windows.Columns:
        """The partials of these entities (positions), grouped by entity in that order."""
        pos = np.asarray(positions, dtype=np.int64)
        lens = self.ends[pos] - self.starts[pos]
        first = np.r_[0, np.cumsum(lens)[:-1]] if len(lens) else lens
        idx = np.repeat(self.starts[pos] - first, lens) + np.arange(int(lens.sum()), dtype=np.int64)
        return windows.take(self.partials, idx)


class _BatchEnrich:
    """A batch's own events that enrich others (a transaction's merchant, by its id), looked
    up by id without a dict per event: most are never asked for (a label's transaction is
    usually days older than the batch)."""

    def __init__(self, ids: list[str], cols: tuple[str, ...], columns: list[list], before: "_BatchEnrich | None"):
        self.at = dict(zip(ids, range(len(ids))))
        self.cols, self.columns, self.before = cols, columns, before

    def found(self, ids: list[str]) -> dict[str, dict]:
        out = self.before.found(ids) if self.before is not None else {}
        at = self.at
        for i in ids:
            j = at.get(i)
            if j is not None:
                out[i] = {c: v[j] for c, v in zip(self.cols, self.columns)}
        return out


def _json_objects(names: tuple[str, ...], columns: list[list]) -> list[bytes]:
    """Per row, the JSON object {name: value, ...} of these columns (``orjson.dumps`` of the
    row's dict; text that needs no escaping is joined directly, the same bytes)."""
    n = len(columns[0]) if columns else 0
    plain = all(all(type(v) is str for v in c) for c in columns) and not any(
        NEEDS_ESCAPE.search(x) for x in [*names, *("".join(c) for c in columns)])
    if not plain:
        return [orjson.dumps(dict(zip(names, t))) for t in zip(*columns)] if n else []
    if len(columns) == 1:
        head = '{"' + names[0] + '":"'
        return [(head + v + '"}').encode() for v in columns[0]]
    heads = ['"' + c + '":"' for c in names]
    return [("{" + ",".join(h + v + '"' for h, v in zip(heads, t)) + "}").encode() for t in zip(*columns)]


class Publisher:
    """The timers: writes a view's current row for every entity whose next change point
    (``due:<view>``) has passed, computed from its stored partials, then schedules its next one."""

    def __init__(self, state: StreamState, views: tuple[WindowedView, ...], writer, lock: threading.Lock):
        self.state, self.views, self.writer, self.lock = state, views, writer, lock
        self.published = 0

    def publish_due(self, now: float, limit: int = 5000, fresh: dict[str, "_Fresh"] | None = None) -> int:
        """Publish every row due at ``now`` (unix s); returns rows written. ``fresh``: per view,
        the partials the batch just committed, still as columns (read instead of decoding
        their blobs again)."""
        written = 0
        with self.lock:
            for view in self.views:
                while True:
                    due = self.state.r.zrangebyscore(self.state.due_key(view.name), "-inf", now, start=0, num=limit)
                    if not due:
                        break
                    # Every entity published is scheduled after now, so this loop ends.
                    written += self._publish(view, _texts(due), now, (fresh or {}).get(view.name))
                    if len(due) < limit:
                        break
            # The instant the online values are exact at (until the next boundary passes).
            self.state.r.hset(self.state.meta, "published_at", now)
        self.published += written
        return written

    def next_due(self) -> float | None:
        """The earliest boundary (unix s) a timer waits for, over every view."""
        firsts = [self.state.r.zrange(self.state.due_key(v.name), 0, 0, withscores=True) for v in self.views]
        times = [f[0][1] for f in firsts if f]
        return min(times) if times else None

    def _publish(self, view: WindowedView, eids: list[str], now: float, fresh: "_Fresh | None" = None) -> int:
        r, st = self.state.r, self.state
        hop = windows.hop_us(view)
        b_now = int(round(now * 1_000_000)) // hop
        # The partials, grouped by entity in the order of ``present`` (the entities that have some).
        if fresh is not None:
            hit = [fresh.at.get(e, -1) for e in eids]
            present = [e for e, i in zip(eids, hit) if i >= 0]
            partials = fresh.rows([i for i in hit if i >= 0])
            others = [e for e, i in zip(eids, hit) if i < 0]
        else:
            present, partials, others = [], {}, eids
        if others:
            blobs = st.blobs(view.name, others)
            partials = windows.concat([partials, decode_columns(view, others, blobs)])
            present += [e for e, b in zip(others, blobs) if b is not None]
        rows, scheduled, n_rows = None, {}, 0
        if windows.nrows(partials):
            rows = windows.rows_at(view, partials, b_now, frame=False)
            n_rows = windows.nrows(rows)
            if n_rows:
                self.writer.write_columns(view.name, rows)
            nxt = windows.next_change(view, partials, b_now, frame=False)
            # b * hop / 1e6 as the timers were always computed (an exact product, one
            # rounding), not b * (hop / 1e6): a hop of 100 ms is no exact float.
            scheduled = dict(zip([present[g] for g in nxt["_entity"].tolist()], (nxt["_next"] * hop / 1e6).tolist()))
        done = [e for e in eids if e not in scheduled]
        with r.pipeline(transaction=True) as pipe:
            if scheduled:
                _zadd(pipe, st.due_key(view.name), list(scheduled), list(scheduled.values()))
            if done:  # every bucket has left every window: the row just written was its last
                pipe.zrem(st.due_key(view.name), *done)
                pipe.delete(*[st.blob_key(view.name, e) for e in done])
            pipe.execute()
        st.forget(view.name, done)
        return n_rows


class Processor:
    """Applies micro-batches of Kafka records to the stream's state (pandas in, Redis out)."""

    def __init__(self, settings: Settings, views: tuple[WindowedView, ...], state: StreamState, writer,
                 clock: Callable[[], float] = time.time, blocks: bool = True):
        self.settings, self.views, self.state, self.clock = settings, views, state, clock
        self.blocks = blocks  # False: every record through ``parse_message`` (the reference the tests compare with)
        self.lock = threading.Lock()
        # (topic, partition) -> the next offset to apply, as committed (read from the state
        # at the first batch; this process is the state's only writer).
        self.applied: dict[tuple[str, int], int] | None = None
        self._sources: dict = {}  # a batch's events per source, shared by its views
        self.publisher = Publisher(state, views, writer, self.lock)
        topics = settings.topics
        self.contract_of_topic = {getattr(topics, c): c for c in self._contracts()}

    def _contracts(self) -> list[str]:
        names: dict[str, None] = {}
        for v in self.views:
            if v.source.enrich:
                names[v.source.enrich[0]] = None
            names[v.source.contract] = None
        # Enriching contracts first: a label in the same batch as its transaction finds it.
        return sorted(names, key=lambda c: 0 if any(v.source.enrich and v.source.enrich[0] == c for v in self.views) else 1)

    @property
    def topics(self) -> list[str]:
        return list(self.contract_of_topic)

    # -- parsing
    def parse(self, records: Any, report: BatchReport) -> dict[str, pd.DataFrame]:
        """Kafka records (topic, partition, offset, key, value, timestamp; an Arrow table, as
        the job reads them, or a DataFrame) -> valid events per contract, one copy per id (the
        first: earliest Kafka time, then partition, offset).

        A contract's records are read as one block where there are enough of them
        (``skewless.contract_columns``: parsed by Arrow's JSON reader and checked as columns);
        a record the block reader does not accept goes through ``Contract.parse_message``,
        which keeps it or refuses it, as every record went before: same events, same count
        of invalid ones (``tests/integration/test_stream_parse.py`` compares both)."""
        out: dict[str, pd.DataFrame] = {}
        table = _arrow_records(records)
        if table is None or not table.num_rows:
            return out
        if table.num_rows > 1:
            table = table.take(pc.sort_indices(table, sort_keys=[("timestamp", "ascending"), ("partition", "ascending"),
                                                                 ("offset", "ascending")]))
        topics = table.column("topic")
        uniq = pc.unique(topics).to_pylist()  # in order of first appearance
        for topic in uniq:
            name = self.contract_of_topic.get(topic)
            if name is None:
                continue
            contract = CONTRACTS[name]
            group = table if len(uniq) == 1 else table.filter(pc.equal(topics, topic))
            parsed = self._rows(contract, group, report)
            if parsed is None:
                continue
            ev, valid, block = parsed
            kafka_ms = _kafka_micros(group.column("timestamp"))[valid] // 1000  # Kafka times, ms (floored)
            ev["_arrived"] = kafka_ms / 1e3
            # One copy per id, the first (as ingestion lands the first offset): later copies
            # are retries, whatever else is wrong with them.
            first = ~ev.duplicated(contract.id_field, keep="first").to_numpy()
            if not first.all():
                report.retries += int((~first).sum())
                ev, kafka_ms, block = ev[first].reset_index(drop=True), kafka_ms[first], block[first]
            # The declared batch checks ingestion dead-letters by (skewless.event_checks): an
            # event the lake refuses must not count online either.
            failed = self._failures(contract, ev, kafka_ms, block)
            if failed.any():
                report.invalid += int(failed.sum())
                ev = ev[~failed].reset_index(drop=True)
                if ev.empty:
                    continue
            seen = np.array(self.state.seen(name, ev[contract.id_field].astype(str).tolist()), dtype=bool)
            report.retries += int(seen.sum())
            out[name] = ev[~seen].reset_index(drop=True) if seen.any() else ev
        return out

    def _rows(self, contract, group: pa.Table, report: BatchReport) -> tuple[pd.DataFrame, np.ndarray, np.ndarray] | None:
        """One contract's records -> (its valid rows as a frame, in the records' order; their
        positions in ``group``; which of them the block reader accepted), or None if none is."""
        n = group.num_rows
        keys = group.column("key").to_pylist()
        values = group.column("value").to_pylist()
        reader = block_reader(contract) if self.blocks and n >= BLOCK_MIN_RECORDS else None
        parts: list = []
        if reader is not None:
            try:
                parts = reader.read(keys, values)
            except Exception:  # noqa: BLE001 - a surprise of the block reader: every record per event
                parts = []
        accepted = np.zeros(n, dtype=bool)
        for pos, _ in parts:
            accepted[pos] = True
        rows, row_pos = [], []
        parse = contract.parse_message
        for j in (np.flatnonzero(~accepted).tolist() if parts else range(n)):
            try:
                rows.append(parse(_bytes(keys[j]), _bytes(values[j])))
                row_pos.append(j)
            except (InvalidEvent, ValueError, TypeError, KeyError):
                report.invalid += 1
        frames = [rb.to_pandas() for _, rb in parts]
        where = [pos for pos, _ in parts]
        if rows:
            frames.append(pd.DataFrame(rows))
            where.append(np.asarray(row_pos, dtype=np.int64))
        if not frames:
            return None
        block = np.concatenate([np.full(len(p), i < len(parts)) for i, p in enumerate(where)])
        valid = np.concatenate(where)
        if len(frames) == 1:
            ev = frames[0]
        else:  # back in the records' order
            ev = pd.concat(frames, ignore_index=True)
            order = np.argsort(valid, kind="stable")
            ev, valid, block = ev.take(order).reset_index(drop=True), valid[order], block[order]
        if parts:
            # The per-event rows' types (``pd.DataFrame`` of ``parse_message``'s values): times in
            # ns, integers as int64 (Arrow's are µs and int32).
            for f in contract.fields:
                if f.name not in ev:
                    continue
                dt = ev[f.name].dtype
                if f.kind is TIME and dt != _TIME_NS:
                    ev[f.name] = ev[f.name].astype(_TIME_NS)
                elif f.kind is INT and dt.kind == "i" and dt != np.int64:
                    ev[f.name] = ev[f.name].astype(np.int64)
        return ev, valid, block

    def _failures(self, contract, ev: pd.DataFrame, kafka_ms: np.ndarray, block: np.ndarray) -> np.ndarray:
        """Which rows fail a declared batch check (``skewless.event_checks``). Rows of the
        per-event parse go through the declared checks (pandera) as ingestion runs them; rows
        the block reader accepted passed every check the contract's field kinds declare
        (the block reader's column checks are those ranges and forms), so only the rules
        beyond the contract are left for them, here as NumPy: allowed values, event time
        not ahead of Kafka's, one event per id. A declared check of another kind sends every
        row through pandera."""
        max_ahead = self.settings.ingest.max_event_time_ahead_s
        bad = np.zeros(len(ev), dtype=bool)
        fast = event_checks.block_failures(contract, ev[block], kafka_ms[block], max_ahead) if block.any() else {}
        slow = ~block if fast is not None else np.ones(len(ev), dtype=bool)
        if slow.any():
            sub = ev[slow]
            checked = sub[event_checks.columns(contract)].assign(
                **{event_checks.KAFKA_TIME: event_checks.kafka_times(kafka_ms[slow].tolist(), sub.index)})
            failed = event_checks.failures(contract, checked, max_ahead)
            if failed:
                bad[list(failed)] = True  # ``ev`` has a range index: labels are positions
        if fast:
            bad[list(fast)] = True  # (labels are positions here too)
        return bad

    # -- one micro-batch
    def apply(self, records: Any, batch_id: int, lag: int | None = None, query_id: str | None = None) -> BatchReport:
        t0 = time.perf_counter()
        table = _arrow_records(records)
        report = BatchReport(batch_id, records=table.num_rows if table is not None else 0)
        if self.applied is None:
            self.applied = self.state.offsets()
        table, reached, report.replayed = self._unapplied(table)
        if report.replayed and not reached:
            report.skipped = True  # every record applied before (a restart read them again)
            return report
        status = self.state.status()
        now = self.clock()
        events = self.parse(table, report)
        t1 = time.perf_counter()
        report.parse_s = t1 - t0
        r = self.state.r
        # The lock covers only the commit: the publisher may publish rows while this batch
        # computes. It never changes partials (it only removes an entity whose buckets all
        # left every window, which the commit may write again, harmlessly), and it reads
        # partials and sets timers under the lock, so it sees a batch whole or not at all.
        pipe = r.pipeline(transaction=True)
        enrich = self._dedupe_and_enrich(pipe, events, now)
        written: dict[str, dict[str, bytes]] = {}
        fresh: dict[str, _Fresh] = {}
        self._sources = {}
        for view in self.views:
            written[view.name] = self._apply_view(pipe, view, events, enrich, now, report, fresh)
        self._sources = {}
        t2 = time.perf_counter()
        report.compute_s = t2 - t1
        with self.lock:
            applied = sum(len(e) for e in events.values())
            report.applied = applied
            meta = {"batch": batch_id, "applied_at": now}
            # published_at says the online values are exact at that instant. A timer this
            # batch sets at or before it makes that untrue until the publisher has run (a
            # reader would otherwise see one view of a boundary written and trust the
            # others): it steps back to just before the earliest such timer.
            published = self.state.r.hget(self.state.meta, "published_at")
            if published is not None and report.first_timer is not None and report.first_timer <= float(published):
                meta["published_at"] = report.first_timer - 1e-6
            if query_id:
                meta["query_id"] = query_id
            if lag is not None:
                meta["lag"] = lag
            # Never backwards: a batch of late events leaves the newest time where it was.
            before = status.newest if status else {}
            meta.update({f"newest:{v}": max(t, before.get(v, t)) for v, t in report.newest.items()})
            if reached:  # the state's position in Kafka moves with it, in the same EXEC
                pipe.hset(self.state.offsets_key(), mapping={f"{t}:{p}": o for (t, p), o in reached.items()})
            meta["committed_at"] = self.clock()
            pipe.hset(self.state.meta, mapping=meta)
            pipe.hincrby(self.state.meta, "events", applied)
            pipe.execute()
            self.applied.update(reached)
            for name, blobs in written.items():
                self.state.remember(name, blobs)
        t3 = time.perf_counter()
        report.commit_s = t3 - t2
        # Every row due by now, the boundaries that passed while this batch ran included
        # (its events' own boundary, with a short hop), not only those due at its start.
        report.rows_published = self.publisher.publish_due(max(now, self.clock()), fresh=fresh)
        report.publish_s = time.perf_counter() - t3
        report.seconds = time.perf_counter() - t0
        return report

    def _unapplied(self, table: pa.Table | None) -> tuple[pa.Table | None, dict[tuple[str, int], int], int]:
        """The records not applied yet (at or past their partition's next offset), the next
        offset per (topic, partition) the batch moves to, and how many records were replays."""
        if table is None or not table.num_rows:
            return table, {}, 0
        topic = table.column("topic").combine_chunks()
        enc = topic if pa.types.is_dictionary(topic.type) else pc.dictionary_encode(topic)
        names = enc.dictionary.to_pylist()
        tp = (enc.indices.to_numpy(zero_copy_only=False).astype(np.int64) << 32) \
            | table.column("partition").to_numpy().astype(np.int64)
        off = table.column("offset").to_numpy().astype(np.int64)
        groups, inv = np.unique(tp, return_inverse=True)
        keys = [(names[g >> 32], g & 0xFFFFFFFF) for g in groups.tolist()]
        floor = np.array([self.applied.get(k, 0) for k in keys], dtype=np.int64)
        last = np.full(len(groups), -1, dtype=np.int64)
        np.maximum.at(last, inv, off)
        reached = {k: int(e) + 1 for k, e, f in zip(keys, last.tolist(), floor.tolist()) if e + 1 > f}
        keep = off >= floor[inv]
        replayed = int(len(keep) - keep.sum())
        return (table if not replayed else table.filter(pa.array(keep))), reached, replayed

    def _dedupe_and_enrich(self, pipe, events: dict[str, pd.DataFrame], now: float) -> dict[str, "_BatchEnrich"]:
        batch_enrich: dict[str, _BatchEnrich] = {}
        horizon = self.settings.stream.dedupe_horizon_s
        for name, ev in events.items():
            if ev.empty:
                continue
            contract = CONTRACTS[name]
            key = self.state.seen_key(name)
            if horizon:
                _zadd(pipe, key, ev[contract.id_field].astype(str).tolist(), ev["_arrived"].astype(float).tolist())
                pipe.zremrangebyscore(key, "-inf", float(ev["_arrived"].max()) - horizon)
        # What another contract's events join by id (a label -> its transaction's merchant).
        for v in self.views:
            if not v.source.enrich:
                continue
            other, key_col, cols = v.source.enrich
            ev = events.get(other)
            if ev is not None and not ev.empty:
                days = windows.micros(ev[CONTRACTS[other].time_field]) // 10**6 // DAY_S
                columns = [ev[c].tolist() for c in cols]
                ids = ev[key_col].astype(str).tolist()
                docs = _json_objects(cols, columns)
                day_list = np.unique(days).tolist()
                for day in day_list:
                    k = self.state.enrich_key(other, int(day))
                    at = np.flatnonzero(days == day).tolist() if len(day_list) > 1 else range(len(ids))
                    args: list = [None] * (2 * len(at))
                    args[0::2] = [ids[j] for j in at]
                    args[1::2] = [docs[j] for j in at]
                    pipe.execute_command("HSET", k, *args)  # (redis-py's hset walks a mapping per field)
                    pipe.expire(k, max(1, int((int(day) + 1) * DAY_S + self.settings.stream.enrich_horizon_s - now)))
                # lookups in this batch find the batch's own events first
                batch_enrich[other] = _BatchEnrich(ids, cols, columns, batch_enrich.get(other))
        return batch_enrich

    def _source(self, pipe, view: WindowedView, events: dict[str, pd.DataFrame], enrich: dict, now: float,
                report: BatchReport) -> pd.DataFrame:
        """The view's new events: filtered, enriched, time column ``_ts``. An event whose
        enrichment has not arrived yet (a label read before its transaction: Spark reads
        the topics side by side) is parked in the state and tried again with each batch."""
        src = view.source
        if not src.enrich:
            # Views of one source share its frame (times as unix µs), made once per batch.
            key = (src.contract, src.where, src.time_column)
            if key not in self._sources:
                ev = events.get(src.contract)
                if ev is None or ev.empty:
                    ev = pd.DataFrame({"_ts": np.array([], dtype="int64")})
                else:
                    if src.where:
                        ev = ev[ev[src.where].astype(bool)]
                    ev = ev.rename(columns={src.time_column: "_ts"})
                    ev["_ts"] = windows.micros(ev["_ts"])
                self._sources[key] = ev
            return self._sources[key]
        ev = events.get(src.contract, pd.DataFrame())
        if src.where and not ev.empty:
            ev = ev[ev[src.where].astype(bool)]
        ev = ev.rename(columns={src.time_column: "_ts"})
        other, key_col, cols = src.enrich
        parked_key = self.state.parked_key(view.name)
        parked = self.state.parked(view.name)
        if parked:
            pipe.delete(parked_key)
            back = pd.DataFrame(parked)
            back["_ts"] = pd.to_datetime(back["_ts"], unit="us", utc=True)
            ev = back if ev.empty else pd.concat([back, ev], ignore_index=True)
        if ev.empty:
            return ev
        ids = ev[key_col].astype(str).tolist()
        mine = enrich.get(other)
        found = mine.found(ids) if mine is not None else {}
        missing = [i for i in ids if i not in found]
        if missing:
            now_day = int(now // DAY_S)
            horizon_days = self.settings.stream.enrich_horizon_s // DAY_S + 2
            found.update(self.state.lookup(other, missing, range(now_day - horizon_days, now_day + 2)))
        ok = np.array([i in found for i in ids], dtype=bool)
        if (~ok).any():
            waiting = ev[~ok].drop(columns=list(cols), errors="ignore").assign(_ts=windows.micros(ev.loc[~ok, "_ts"]))
            pipe.hset(parked_key, mapping={str(rec[key_col]): json.dumps(rec, default=_plain)
                                           for rec in waiting.to_dict("records")})
            pipe.expire(parked_key, max(1, self.settings.stream.enrich_horizon_s))
            report.parked += int((~ok).sum())
        ev = ev[ok].copy()
        for c in cols:
            ev[c] = [found[i][c] for i in ev[key_col].astype(str)]
        return ev

    def _apply_view(self, pipe, view: WindowedView, events: dict[str, pd.DataFrame], enrich: dict, now: float,
                    report: BatchReport, fresh: dict[str, _Fresh]) -> dict[str, bytes]:
        """Queue the view's changes on ``pipe``; returns the blobs it writes (entity id ->
        blob), for the in-memory copy once the transaction is applied, and leaves
        their partials as columns in ``fresh`` (the batch's own publication reads them)."""
        ev = self._source(pipe, view, events, enrich, now, report)
        if ev.empty:
            return {}
        hop = windows.hop_us(view)
        now_b = int(now * 1_000_000) // hop  # the current boundary (hop units)
        wmax = max(windows.hops(view, a) for a in view.aggregations)
        t_us = windows.micros(ev["_ts"])
        k = t_us // hop
        # An event that left every window before now changes no value from now on; it still
        # makes its entity known (the offline table has its decayed row), and the batch job
        # writes it into the offline history.
        report.too_late += int((k < now_b - wmax).sum())
        report.newest[view.name] = max(report.newest.get(view.name, 0.0), float(t_us.max()) / 1e6)
        new = windows.bucket_columns(view, ev)  # sorted by entity and bucket
        keys = view.join_keys
        # ``new``'s entity runs: an entity's first row holds its first new bucket.
        k_new = new["_k"]
        change = np.zeros(len(k_new) - 1, dtype=bool)
        for key in keys:
            change |= new[key][1:] != new[key][:-1]
        first_new = np.r_[0, np.flatnonzero(change) + 1]
        eids = entity_ids([new[key][first_new] for key in keys])
        stored, stored_codes = self.state.load_coded(view, eids)
        if windows.nrows(stored):
            # Entity codes in ``eids``' order, which is the keys' sorted order (``new`` is sorted).
            codes = np.r_[stored_codes, np.repeat(np.arange(len(eids), dtype=np.int64),
                                                  np.diff(np.r_[first_new, len(k_new)]))]
            merged = windows.merge_columns(view, windows.concat([stored, new]), entity_codes=codes)
        else:
            merged = windows.merge_columns(view, new)
        # What is kept: the buckets that can still change a value at now or later, and the
        # newest of the others (it changes no value, but says the entity has a history: its
        # row is a decayed one, not "not found"). ``merged`` is sorted by entity and bucket.
        mk = merged["_k"]
        live = mk >= now_b - wmax
        same_next = np.ones(len(mk), dtype=bool)
        same_next[-1] = False
        for key in keys:
            same_next[:-1] &= merged[key][1:] == merged[key][:-1]
        live_next = np.r_[live[1:], False]
        keep = live | ~same_next | live_next  # a past bucket: the entity's last past one
        if not keep.all():
            merged = windows.take(merged, keep)
        # Every row published from now on is at a boundary from now_b on: what none of them
        # reads is forgotten (a distinct value seen again later, a selecting view's bucket
        # that a later one dominates). A second's margin for a clock stepped back.
        merged = windows.forget_dominated(view, merged, now_b - max(1, 1_000_000 // hop))
        # Its timer: now if a new event is before the current boundary (a late one changed the
        # current value), else when its first new bucket enters the windows. ZADD LT keeps an
        # earlier timer already set.
        hop_s = hop / 1e6
        k_first = k_new[first_new]
        timers = dict(zip(eids, (np.where(k_first < now_b, now_b, k_first + 1) * hop_s).tolist()))
        m_eids, m_blobs, ends = encode_columns(view, merged)
        fresh[view.name] = _Fresh(m_eids, merged, ends)
        prefix = self.state.blob_key(view.name, "")
        args: list = [None] * (2 * len(m_blobs))
        args[0::2] = [prefix + e for e in m_eids]
        args[1::2] = m_blobs
        if m_blobs:
            # One MSET for the view's blobs, without a TTL: the publisher deletes an entity's
            # blob with its last change point. (A TTL each, by SET EX in a script, cost Redis
            # twice the CPU: 8-10 µs a blob against 5, measured on 110k blobs.)
            pipe.execute_command("MSET", *args)
        written = dict(zip(m_eids, m_blobs))
        _zadd(pipe, self.state.due_key(view.name), list(timers), list(timers.values()), lt=True)
        report.timers += len(timers)
        if timers:
            first = min(timers.values())
            report.first_timer = first if report.first_timer is None else min(report.first_timer, first)
        return written


# The collector's thresholds once the job is warm: a micro-batch allocates hundreds of
# thousands of short-lived objects (rows, ids, decoded sets); with the default (700, 10, 10)
# the young generations are collected hundreds of times per batch, each collection walking
# the objects the batch still holds (measured: one ``orjson.loads`` of 7,300 entities' sets
# took 62 ms frozen with the default thresholds, 35 ms with these).
GC_THRESHOLDS = (50_000, 20, 100)


def settle_gc() -> None:
    """After the first batch: everything the job imported and built once (Feast, pandas,
    py4j, the registry) leaves the collector's sight (a full collection walked it all, ~0.5 s,
    the batches' latency tail), and the young generations are collected less often; what
    the batches allocate is still collected."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _zadd(pipe, key: str, members: list, scores: list, lt: bool = False) -> None:
    """``ZADD key [LT] score member ...`` as one flat argument list (redis-py's ``zadd`` walks a
    mapping with two appends per member). A member given twice keeps its last score, as a
    mapping does."""
    if not members:
        return
    args: list = [None] * (2 * len(members))
    args[0::2] = scores
    args[1::2] = members
    pipe.execute_command("ZADD", key, *(("LT",) if lt else ()), *args)


def _texts(members: list[bytes]) -> list[str]:
    """Entity ids read from Redis as text (one decode: an id, JSON, holds no raw NUL)."""
    return b"\x00".join(members).decode().split("\x00") if members else []


def _plain(v: Any) -> Any:
    """JSON for NumPy scalars and times in a parked event."""
    return v.item() if hasattr(v, "item") else str(v)


def _bytes(v: Any) -> bytes | None:
    if v is None or type(v) is bytes:
        return v
    return bytes(v)


def _arrow_records(records: Any) -> pa.Table | None:
    """A micro-batch's Kafka records as an Arrow table (what the job reads: ``toArrow``), from
    a table, a record batch or a DataFrame; None when there are none."""
    if isinstance(records, pa.Table):
        return records
    if isinstance(records, pa.RecordBatch):
        return pa.Table.from_batches([records])
    if records is None or not len(records):
        return None
    return pa.Table.from_pandas(records[[c for c in RECORD_COLUMNS if c in records]], preserve_index=False)


def _kafka_micros(col: Any) -> np.ndarray:
    """Kafka timestamps (an Arrow column) -> int64 unix µs (floored, as ``windows.micros``)."""
    t = col.type
    if pa.types.is_timestamp(t):
        v = col.cast(pa.int64()).to_numpy()
        if t.unit == "ns":
            return v // 1000
        return v * {"s": 1_000_000, "ms": 1000, "us": 1}[t.unit]
    return windows.micros(col.to_pandas())


def _kafka_options(settings: Settings) -> dict[str, str]:
    k = settings.kafka
    opts = {"kafka.bootstrap.servers": ",".join(k.bootstrap_servers), "kafka.security.protocol": k.security_protocol}
    if k.sasl_mechanism:
        opts["kafka.sasl.mechanism"] = k.sasl_mechanism
        password = k.sasl_password.get_secret_value() if k.sasl_password else ""
        login = ("org.apache.kafka.common.security.plain.PlainLoginModule" if k.sasl_mechanism == "PLAIN"
                 else "org.apache.kafka.common.security.scram.ScramLoginModule")
        opts["kafka.sasl.jaas.config"] = f'{login} required username="{k.sasl_username}" password="{password}";'
    return opts


def _lag(latest: dict[tuple[str, int], int] | None, applied: dict[tuple[str, int], int] | None) -> int | None:
    """Kafka records not applied yet: the broker's newest readable offsets against the
    state's next ones (a partition the state never read counts whole); None while the broker
    does not answer."""
    if latest is None:
        return None
    done = dict(applied or {})
    return sum(max(0, off - done.get(tp, 0)) for tp, off in latest.items())


def _starting_offsets(topics: list[str], ends: dict[tuple[str, int], int], applied: dict[tuple[str, int], int]) -> str:
    """Spark's ``startingOffsets``: every partition of the topics (Spark wants them all) at
    the state's next offset, or the earliest (-2) where the state has none."""
    out: dict[str, dict[str, int]] = {t: {} for t in topics}
    for (topic, part) in sorted(ends):
        if topic in out:
            out[topic][str(part)] = applied.get((topic, part), -2)
    return json.dumps(out)


class _LatestOffsets:
    """The broker's newest readable offsets (``read_committed``: the last stable offset,
    as Spark's source reads) of the stream's topics, asked at most once a second; None
    while the broker does not answer (the lag is then unknown)."""

    def __init__(self, settings: Settings, topics: list[str]):
        self.settings, self.topics = settings, topics
        self.consumer = None
        self.asked_at, self.value = 0.0, None

    def __call__(self, force: bool = False) -> dict[tuple[str, int], int] | None:
        if not force and time.monotonic() - self.asked_at < 1.0:
            return self.value
        self.asked_at = time.monotonic()
        try:
            from kafka import KafkaConsumer, TopicPartition

            if self.consumer is None:
                self.consumer = KafkaConsumer(**self.settings.kafka.client_config(), group_id=None,
                                              enable_auto_commit=False, isolation_level="read_committed",
                                              request_timeout_ms=5000)
            tps = [TopicPartition(t, p) for t in self.topics for p in sorted(self.consumer.partitions_for_topic(t) or ())]
            ends = self.consumer.end_offsets(tps) if tps else {}
            self.value = {(tp.topic, tp.partition): int(off) for tp, off in ends.items()}
        except Exception:  # noqa: BLE001 - the broker away or restarting: report the last batch's lag
            self.value = None
        return self.value

    def close(self) -> None:
        if self.consumer is not None:
            try:
                self.consumer.close(timeout_ms=1000)
            except Exception:  # noqa: BLE001
                pass


def run_stream(settings: Settings, *, views: tuple[WindowedView, ...], until_idle: float | None = None,
               master: str | None = None, on_batch: Callable[[BatchReport], None] | None = None,
               stop: threading.Event | None = None, rebuild: bool = False) -> dict[str, Any]:
    """Run the streaming job until ``stop`` is set, or until no record arrived for
    ``until_idle`` seconds with nothing left to read; returns the summary. ``rebuild``:
    forget the state first (it is rebuilt from the earliest offsets)."""
    import shutil

    import redis

    from etl.online_writer import OnlineWriter
    from skewless.errors import ConfigError, ServiceError
    from skewless.features import watermark
    from skewless.lake_layout import LakeLayout
    from skewless.settings_checks import mask_url_password
    from skewless.spark import spark_session

    if settings.online_store != "redis":
        raise ConfigError("the streaming job writes the Redis online store; online_store is sqlite",
                          "set online_store: redis (and redis_url)")
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    client = redis.Redis.from_url(settings.redis_url, password=password, socket_timeout=10)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise ServiceError(f"Redis does not answer at {mask_url_password(settings.redis_url)}: {exc}",
                           "start it with: skewless services up") from exc
    writer = OnlineWriter(settings)
    for v in views:
        writer._view(v.name)  # every view registered, or one clear error now
    state = StreamState(client, settings.feast_project, settings.stream.state_cache_entities)
    proc = Processor(settings, views, state, writer)
    # Spark's Kafka source fails on a topic that does not exist yet (no label produced so
    # far): create them as ingestion does, which also names a broker that does not answer.
    from skewless.topics import ensure_topics

    ensure_topics(settings, proc.topics)
    latest_offsets = _LatestOffsets(settings, proc.topics)
    ends = latest_offsets(force=True)
    if ends is None:
        raise ServiceError("Kafka does not answer for the stream's topics' offsets", "start it with: skewless services up")
    status, applied = state.status(), state.offsets()
    # The state says where in Kafka it stands (its offsets, committed with it). None (a state
    # from before offsets were kept), or past a partition's end (the topics were recreated):
    # it starts again from the earliest offsets, which rebuilds it exactly.
    behind = [tp for tp, o in applied.items() if o > ends.get(tp, 0)]
    rebuilt = rebuild or bool(status is not None and status.batch is not None and not applied) or bool(behind)
    if rebuilt:
        state.reset()
        applied = {}
    proc.applied = dict(applied)
    # Spark's checkpoint only serves this run: where to start is the state's business.
    checkpoint = LakeLayout.of(settings).stream_checkpoint
    shutil.rmtree(checkpoint, ignore_errors=True)
    spark = spark_session(settings, master, app="skewless-stream", kafka=True)
    reader = spark.readStream.format("kafka")
    for key, value in {**_kafka_options(settings), "subscribe": ",".join(proc.topics),
                       "startingOffsets": _starting_offsets(proc.topics, ends, applied),
                       "kafka.isolation.level": "read_committed", "failOnDataLoss": "false",
                       "maxOffsetsPerTrigger": str(settings.stream.max_offsets_per_trigger)}.items():
        reader = reader.option(key, value)
    source = reader.load().select("topic", "partition", "offset", "key", "value", "timestamp")
    totals = {"batches": 0, "records": 0, "applied": 0, "invalid": 0, "retries": 0, "too_late": 0,
              "rows_published": 0, "replayed": 0}
    last_data = [time.monotonic()]
    batch_seconds: list[float] = []

    frozen = [False]
    phases: dict[str, list[float]] = {"read_s": [], "parse_s": [], "compute_s": [], "commit_s": [], "publish_s": []}

    def apply(df, batch_id: int) -> None:
        t_read = time.perf_counter()
        # Arrow, not pandas: the records' bytes stay in Arrow buffers (``parse`` reads them
        # as one block); ``toPandas`` made a Python object per key and value.
        records = df.toArrow()
        read_s = time.perf_counter() - t_read
        report = proc.apply(records, batch_id, query_id=query_id[0])
        if report.records and not frozen[0]:
            # Everything the job imports and builds once (Feast, pandas, py4j, the registry)
            # is in memory now: out of the garbage collector's sight. A full collection
            # walks every tracked object and took ~0.5 s (the batches' latency tail);
            # what the batches allocate afterwards is still collected.
            settle_gc()
            frozen[0] = True
        if report.records:
            phases["read_s"].append(read_s)
            for name in ("parse_s", "compute_s", "commit_s", "publish_s"):
                phases[name].append(getattr(report, name))
        totals["batches"] += 1
        for name in ("records", "applied", "invalid", "retries", "too_late", "rows_published", "replayed"):
            totals[name] += getattr(report, name)
        if report.records:
            last_data[0] = time.monotonic()
            batch_seconds.append(report.seconds)
        if on_batch:
            on_batch(report)

    writer_ = source.writeStream.foreachBatch(apply).option("checkpointLocation", str(checkpoint))
    if settings.stream.trigger_ms:
        writer_ = writer_.trigger(processingTime=f"{settings.stream.trigger_ms} milliseconds")
    t0 = time.time()
    query_id: list[str | None] = [None]
    query = writer_.start()
    query_id[0] = query.id
    stop = stop or threading.Event()
    lag = None
    marked = [0.0]
    try:
        while query.isActive and not stop.is_set():
            # Wake at the next due boundary (a row is published within milliseconds of it),
            # or after idle_publish_ms to look at the query and the lag.
            wait = settings.stream.idle_publish_ms / 1000
            due = proc.publisher.next_due()
            if due is not None:
                wait = min(wait, max(0.0, due - time.time()))
            stop.wait(wait)
            totals["rows_published"] += proc.publisher.publish_due(time.time())
            # Kafka records not applied yet: the broker's newest offsets (when it answers)
            # against the state's.
            lag = _lag(latest_offsets(), proc.applied)
            if lag is not None:
                client.hset(state.meta, mapping={"lag": lag})
            if time.monotonic() - marked[0] >= 1.0 and totals["batches"]:
                # The online store holds every view's values up to now (where a load made a
                # watermark; a missing one stays missing: serving's /readyz keeps saying so).
                watermark.advance(settings, {v.name: datetime.now(timezone.utc) for v in views}, "stream")
                marked[0] = time.monotonic()
            if until_idle is not None and time.monotonic() - last_data[0] >= until_idle and lag in (0, None) \
                    and query.lastProgress is not None:
                break
    except KeyboardInterrupt:
        pass
    finally:
        if query.isActive:
            query.stop()
        latest_offsets.close()
    error = query.exception()
    if error is not None:
        first = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
        raise ServiceError(f"the streaming job failed: {first[:400]}",
                           f"Spark's messages are in {settings.state_dir / 'logs' / 'spark.log'}")
    elapsed = time.time() - t0
    batch_seconds.sort()
    lag = _lag(latest_offsets.value, proc.applied)
    return {**totals, "seconds": round(elapsed, 2), "lag": lag, "rebuilt": rebuilt,
            "events_per_s": round(totals["applied"] / elapsed, 1) if elapsed else None,
            "batch_seconds_p50": round(batch_seconds[len(batch_seconds) // 2], 3) if batch_seconds else None,
            # Where a micro-batch's time goes (medians over batches with records).
            "phase_seconds_p50": {k: round(sorted(v)[len(v) // 2], 4) for k, v in phases.items() if v},
            "checkpoint": str(checkpoint), "topics": proc.topics, "master": master or settings.spark_master}
