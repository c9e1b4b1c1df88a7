"""One Kafka partition's open batch: decoded rows by event date, and dead letters.

A batch closes by record count, message bytes, or the number of event dates it spans
(``max_dates_per_batch``: the files it writes); the consumer also lands it early on shutdown, idle, rebalance, or once it is
``max_batch_age_s`` old (``LakeSink.flush_aged``). Where a batch closes does not matter to
exactly-once: a landed batch has a manifest and the consumer resumes right after it; an
open one dies with the process and is read again.

Every offset added is accounted for exactly once: a row in its event date's file, or a dead
letter with its reason. A batch writes one file per event date (UTC) it holds, its rows
sorted by event time (then Kafka offset), so each row group's statistics bound its times
and a reader's time filter skips row groups within a date.

A poll's records are read as one block where they can be (``BLOCK_MIN_RECORDS``): parsed in
one call and checked as Arrow columns (``skewless.contract_columns``), the rows it accepts
kept as Arrow record batches; a message it does not accept goes through the contract per
event as below, so a dead letter's reason is the per-event one and the lake's rows are the
same (``tests/unit/test_contract_columns.py`` compares both paths on hostile polls).

Any exception while decoding or validating one message, expected (``InvalidEvent``) or not (a bug, an input no one thought of), dead-letters that message
with the exception's type and message as the reason: one bad event never breaks a batch.

Two tiers of checks (``skewless.event_checks``): the contract's, per event as it is added,
and the declared batch checks (pandera), once per batch when it is written, over all its
rows as one DataFrame; a row failing one is taken out of its date's table and
dead-lettered with its original bytes. Every reason starts with ``check <name>:``.
So a valid event's key and value bytes are kept until its batch is written (~1.3x the
message bytes of an open batch).
"""

from __future__ import annotations

import bisect
import copy
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import pyarrow.compute as pc

from skewless import event_checks
from skewless.contract_columns import block_reader
from skewless.contracts import Contract, InvalidEvent
from ingestion.lake_files import fsync
from skewless.lake_layout import TMP_PREFIX, BatchRange, LakeLayout

DEAD_LETTER_SCHEMA = pa.schema([
    pa.field("topic", pa.string(), nullable=False),
    pa.field("partition", pa.int32(), nullable=False),
    pa.field("offset", pa.int64(), nullable=False),
    pa.field("key", pa.binary()),
    pa.field("value", pa.binary()),
    pa.field("reason", pa.string(), nullable=False),
    pa.field("kafka_timestamp_ms", pa.int64()),
    pa.field("_ingested_at", pa.timestamp("us", tz="UTC"), nullable=False),
])

# Valid rows of one event date are buffered as Python dicts only until this many
# accumulate, then converted to one Arrow record batch: a buffered event costs its column
# values (~100 bytes) instead of a dict (~1 KB), so memory per open batch stays small.
CHUNK_ROWS = 8192
# A dead letter's reason is one line: an exception's message can echo a whole value.
MAX_REASON = 400
# Parquet encoding, compression and fsync release the GIL: files are written by this many
# threads while the next date's table is built.
WRITE_THREADS = 2
# A poll of at least this many records (of one partition) is read as one block
# (``skewless.contract_columns``: parsed and checked as Arrow columns, what it does not
# accept then per event); fewer go per event: the block's fixed cost (~0.6 ms of CPU: the
# reader, ~15 Arrow calls) is the per-event cost of ~200 events.
BLOCK_MIN_RECORDS = 256
# When the block reader accepts less than this share of a poll (a run of bad or unusual
# messages: each refused block costs more reads), the next polls go per event: 1, then 2, 4,
# ... up to BLOCK_BACKOFF_MAX polls while it lasts; a poll read well resets it.
BLOCK_ACCEPT_SHARE = 0.9
BLOCK_BACKOFF_MAX = 64
# The key under which ``chunks`` keeps the blocks' rows (of any dates: every row of the batch is
# sorted by event time when it is landed).
BLOCKS = -1
EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
US_PER_DAY = 86_400_000_000
_ARROW_STRINGS = {pa.string(): pd.ArrowDtype(pa.string()), pa.large_string(): pd.ArrowDtype(pa.large_string())}


class Record(NamedTuple):
    """One Kafka message, as ``add_records`` reads it (kafka-python's records have these too)."""

    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int | None


def _reason(text: str) -> str:
    """A dead letter's reason: one bounded line that Parquet can store (valid UTF-8)."""
    return text[:MAX_REASON].encode("utf-8", "backslashreplace").decode("utf-8")


def _dead_reason(contract: str, exc: Exception) -> str:
    """The reason of a message ``parse_message`` (or anything after it) raised on."""
    if isinstance(exc, InvalidEvent):
        return _reason(f"check {exc.check_name(contract)}: {exc}")
    return _reason(f"check {contract}.contract: could not validate: {type(exc).__name__}: {exc}")


def _in_blocks(blocks: list[tuple[list, list, list, list]], offset: int) -> tuple:
    """(key, value, Kafka timestamp) of a block's row by its offset (a block's offsets ascend)."""
    for offs, keys, values, stamps in blocks:
        i = bisect.bisect_left(offs, offset)
        if i < len(offs) and offs[i] == offset:
            return keys[i], values[i], stamps[i]
    raise KeyError(offset)


class PartitionBatch:
    def __init__(self, topic: str, partition: int, contract: Contract, limits: Any, blocks: bool = True):
        self.topic = topic
        self.partition = partition
        self.contract = contract
        self.limits = limits
        self._time_field = contract.time_field
        self._parse = contract.parse_message  # bound once: called per message
        # Polls read as blocks (None: every message per event; so for a contract without one).
        self._reader = block_reader(contract) if blocks else None
        self._skip_blocks = 0  # polls still to go per event, and the next such run's length
        self._backoff = 1
        self._optional = [f.name for f in contract.fields if not f.required]
        self._checked = event_checks.columns(contract)
        self._max_ahead_s = float(getattr(limits, "max_event_time_ahead_s", event_checks.DEFAULT_MAX_AHEAD_S))
        self._schemas: dict[frozenset, pa.Schema] = {}
        self._max_records, self._max_bytes = limits.flush_records, limits.flush_bytes
        self._max_dates = limits.max_dates_per_batch
        self.reset()

    def reset(self) -> None:
        self.first: int | None = None
        self.last: int | None = None
        self.count = 0
        self.nbytes = 0
        # Per event date (its ordinal): rows not yet converted, and the Arrow chunks of those that were.
        self.dates: dict[int, list[dict]] = {}
        self.chunks: dict[int, list[pa.RecordBatch]] = {}
        self.dead: list[tuple] = []
        # offset -> (key, value, Kafka timestamp) of each valid row added per event, and the same
        # as four lists per block (offsets ascending: no object per row), until the batch checks ran.
        self.raw: dict[int, tuple] = {}
        self.raw_blocks: list[tuple[list, list, list, list]] = []

    def __len__(self) -> int:
        return self.count

    def take(self) -> "PartitionBatch":
        """Hand the batch's records over to a new batch object (to be landed on another
        thread) and start empty again."""
        closed = copy.copy(self)
        self.reset()
        return closed

    def add(self, offset: int, key: bytes | None, value: bytes | None, timestamp_ms: int | None) -> bool:
        """Add one message; True when the batch is full and must be flushed now."""
        self.add_records((Record(offset, key, value, timestamp_ms),))
        return self.full()

    def full(self) -> bool:
        """The batch must be landed now: it holds ``flush_records`` records, ``flush_bytes``
        message bytes or ``max_dates_per_batch`` event dates."""
        return self.count >= self._max_records or self.nbytes >= self._max_bytes or len(self.dates) >= self._max_dates

    def reads_as_block(self, records: Sequence) -> bool:
        """Whether a poll of ``records`` is read as a block (called once per poll: it counts
        down the back-off)."""
        if self._reader is None or len(records) < BLOCK_MIN_RECORDS:
            return False
        if self._skip_blocks:
            self._skip_blocks -= 1
            return False
        return True

    def read_block(self, records: Sequence) -> list:
        """The block reader's parts for a whole poll (see ``add_records``'s ``parts``): pure,
        so it can run ahead on another thread while the consumer polls. Never raises: a
        surprise of the block reader sends every message per event."""
        try:
            return self._reader.read([m.key for m in records], [m.value for m in records])
        except Exception:  # noqa: BLE001 - the per-event path decides every message
            return []

    def add_records(self, records: Sequence, start: int = 0, parts: list | None = None,
                    blocks: bool = True) -> int:
        """Add ``records[start:]`` (Kafka records: ``offset``, ``key``, ``value``, ``timestamp``)
        in order, until the batch is ``full()``; returns the index after the last one added
        (``len(records)`` unless the batch filled up before). The hot loop of the sink: one
        call per poll, with the batch's state in locals. A poll of ``BLOCK_MIN_RECORDS`` or more
        is read as one block (``_add_block``), with the same outcome; ``parts``: the poll's
        block, read ahead (``read_block`` of all of ``records``); ``blocks=False``: per event."""
        n = len(records)
        if start >= n:
            return start
        if parts is not None:
            return self._add_block(records, start, parts)
        if blocks and (start == 0 and self.reads_as_block(records) or start and self._reader is not None
                       and n - start >= BLOCK_MIN_RECORDS and not self._skip_blocks):
            return self._add_block(records, start)
        if self.first is None:
            self.first = records[start].offset
        parse, time_field, dates, raw, dead = self._parse, self._time_field, self.dates, self.raw, self.dead
        max_records, max_bytes, max_dates = self._max_records, self._max_bytes, self._max_dates
        count, nbytes = self.count, self.nbytes
        i = start
        try:
            while i < n:
                m = records[i]
                i += 1
                value = m.value
                count += 1
                if value:
                    nbytes += len(value)
                try:
                    row = parse(m.key, value)
                    day = row[time_field].toordinal()  # the event's date (UTC: the contract converted it)
                except Exception as exc:  # noqa: BLE001 - one event's surprise costs that event, never the batch
                    dead.append((m.offset, m.key, value, _dead_reason(self.contract.name, exc), m.timestamp))
                else:
                    offset = m.offset
                    raw[offset] = (m.key, value, m.timestamp)  # not the record: it holds more than these
                    row["_kafka_offset"] = offset  # (``_kafka_partition`` is the batch's: one column at seal)
                    rows = dates.get(day)
                    if rows is None:
                        dates[day] = rows = []
                    rows.append(row)
                    if len(rows) >= CHUNK_ROWS:
                        self._seal(day)
                if count >= max_records or nbytes >= max_bytes or len(dates) >= max_dates:
                    break
        finally:
            self.count, self.nbytes = count, nbytes
            self.last = records[i - 1].offset
        return i

    def _add_block(self, records: Sequence, start: int, ahead: list | None = None) -> int:
        """``add_records`` for a poll: the records the batch has room for are read as one block
        (``BlockReader.read``: parsed and checked as Arrow columns), those it does not accept
        go through ``parse_message`` one by one (a row, or a dead letter with its reason), and
        the batch closes at the record ``add_records`` would stop at (flush_records,
        flush_bytes, max_dates_per_batch), known before anything is added."""
        n = len(records)
        end = min(n, start + max(1, self._max_records - self.count))
        recs = records[start:end] if start or end < n else records
        values = [m.value for m in recs]
        try:
            sizes = list(map(len, values))
        except TypeError:  # a null value
            sizes = [len(v) if v else 0 for v in values]
        if self.nbytes + sum(sizes) >= self._max_bytes:  # the batch fills up by bytes in this poll
            acc, cut = self.nbytes, len(sizes)
            for i, size in enumerate(sizes):
                acc += size
                if acc >= self._max_bytes:
                    cut = i + 1
                    break
            recs, values, sizes = recs[:cut], values[:cut], sizes[:cut]
        keys = [m.key for m in recs]
        m_count = len(recs)
        if ahead is None:
            try:
                parts = self._reader.read(keys, values)
            except Exception:  # noqa: BLE001 - a surprise of the block reader: every message per event
                parts = []
        else:  # the poll's block read ahead: the part of it in [start, start + m_count)
            parts = []
            for pos, rows in ahead:
                lo, hi = np.searchsorted(pos, [start, start + m_count]).tolist()
                if hi > lo:
                    parts.append((pos[lo:hi] - start, rows.slice(lo, hi - lo)))
        # Each record's event date (its ordinal), -1 for a dead letter; the per-event outcome
        # of the records the block reader did not accept.
        day_of = np.full(m_count, -1, dtype=np.int64)
        accepted = np.zeros(m_count, dtype=bool)
        part_days = []
        for pos, rows in parts:
            days = rows.column(self._time_field).cast(pa.int64()).to_numpy() // US_PER_DAY + EPOCH_ORDINAL
            day_of[pos] = days
            accepted[pos] = True
            part_days.append(days)
        if sum(len(p) for p, _ in parts) < BLOCK_ACCEPT_SHARE * m_count:
            self._skip_blocks, self._backoff = self._backoff, min(2 * self._backoff, BLOCK_BACKOFF_MAX)
        else:
            self._backoff = 1
        contract, time_field, parse = self.contract.name, self._time_field, self._parse
        single: dict[int, Any] = {}
        for i in np.flatnonzero(~accepted).tolist():
            m = recs[i]
            try:
                row = parse(m.key, m.value)
                day_of[i] = row[time_field].toordinal()
            except Exception as exc:  # noqa: BLE001 - one event's surprise costs that event, never the batch
                single[i] = _dead_reason(contract, exc)
            else:
                single[i] = row
        # Where ``max_dates_per_batch`` closes the batch: at the record whose date is the batch's last.
        cut = m_count
        dates = self.dates
        room = self._max_dates - len(dates)
        valid = np.flatnonzero(day_of >= 0)
        if room <= 0:
            cut = 1
        elif len(valid):
            uniq, first = np.unique(day_of[valid], return_index=True)
            fresh = sorted(int(valid[f]) for d, f in zip(uniq.tolist(), first.tolist()) if d not in dates)
            if len(fresh) >= room:
                cut = fresh[room - 1] + 1
        # Add records [0, cut).
        raw, dead = self.raw, self.dead
        if cut < m_count:
            recs, keys, values = recs[:cut], keys[:cut], values[:cut]
        offsets = [m.offset for m in recs]
        stamps = [m.timestamp for m in recs]
        for (pos, rows), days in zip(parts, part_days):
            k = int(np.searchsorted(pos, cut))
            if k == 0:
                continue
            if k < len(pos):
                pos, rows, days = pos[:k], rows.slice(0, k), days[:k]
            if len(pos) == len(offsets):  # the whole poll: its lists as they are
                offs, ks, vs, ts = offsets, keys, values, stamps
            else:
                idx = pos.tolist()
                offs, ks, vs, ts = ([x[i] for i in idx] for x in (offsets, keys, values, stamps))
            self.raw_blocks.append((offs, ks, vs, ts))
            rows = rows.append_column(pa.field("_kafka_offset", pa.int64(), nullable=False),
                                      pa.array(offs, pa.int64()))
            self.chunks.setdefault(BLOCKS, []).append(rows)
            for d in np.unique(days).tolist():
                if d not in dates:
                    dates[d] = []
        for i, got in single.items():
            if i >= cut:
                continue
            m = recs[i]
            if type(got) is str:
                dead.append((m.offset, m.key, m.value, got, m.timestamp))
                continue
            raw[m.offset] = (m.key, m.value, m.timestamp)
            got["_kafka_offset"] = m.offset
            day = int(day_of[i])
            rows = dates.get(day)
            if rows is None:
                dates[day] = rows = []
            rows.append(got)
            if len(rows) >= CHUNK_ROWS:
                self._seal(day)
        if self.first is None:
            self.first = offsets[0]
        self.count += cut
        self.nbytes += sum(sizes[:cut])
        self.last = offsets[cut - 1]
        return start + cut

    def _schema(self, present: frozenset) -> pa.Schema:
        """The lake schema for rows holding the optional fields ``present`` (cached)."""
        schema = self._schemas.get(present)
        if schema is None:
            schema = self._schemas[present] = self.contract.arrow_schema(set(present))
        return schema

    def _seal(self, bucket: int) -> None:
        """Convert a date's buffered rows to one Arrow record batch (all but ``_kafka_partition``
        and ``_ingested_at``, the same for every row of the batch: added when it is written)."""
        rows = self.dates[bucket]
        if not rows:
            return
        present = frozenset(n for n in self._optional if any(n in r for r in rows))
        schema = self._schema(present)
        schema = schema.remove(schema.get_field_index("_ingested_at")).remove(schema.get_field_index("_kafka_partition"))
        self.chunks.setdefault(bucket, []).append(pa.RecordBatch.from_pylist(rows, schema=schema))
        self.dates[bucket] = []

    def _batch_table(self, now: datetime) -> pa.Table:
        """Every valid row of the batch as one table sorted by event time, then offset (so
        by date too): the optional columns any row has (null where a row lacks them),
        ``_kafka_partition`` and ``_ingested_at``. One table per batch, not one per date:
        an out-of-order batch holds many dates, and each Arrow call on the lander thread
        waits for the GIL the poll loop holds."""
        rows = [r for day in sorted(self.dates) for r in self.dates[day]]
        chunks = [c for day in sorted(self.chunks) for c in self.chunks[day]]
        self.dates, self.chunks = {}, {}
        if rows:
            present = frozenset(n for n in self._optional if any(n in r for r in rows))
            schema = self._schema(present)
            schema = schema.remove(schema.get_field_index("_ingested_at")).remove(
                schema.get_field_index("_kafka_partition"))
            chunks.append(pa.RecordBatch.from_pylist(rows, schema=schema))
        present = frozenset(n for n in self._optional if any(n in c.schema.names for c in chunks))
        schema = self._schema(present)
        constant = {"_ingested_at": pa.scalar(now, schema.field("_ingested_at").type),
                    "_kafka_partition": pa.scalar(self.partition, schema.field("_kafka_partition").type)}
        batches = []
        for c in chunks:
            names = c.schema.names
            cols = [c.column(f.name) if f.name in names else
                    pa.repeat(constant[f.name], c.num_rows) if f.name in constant else pa.nulls(c.num_rows, f.type)
                    for f in schema]
            batches.append(pa.RecordBatch.from_arrays(cols, schema=schema))
        table = pa.Table.from_batches(batches, schema=schema)
        return table.sort_by([(self._time_field, "ascending"), ("_kafka_offset", "ascending")])

    def _date_tables(self, table: pa.Table) -> dict[int, pa.Table]:
        """The batch's table (sorted by event time) cut into one table per event date (its
        ordinal), each with the optional columns its rows have: what one table per date
        built from the date's rows alone holds."""
        if not table.num_rows:
            return {}
        day_of = table.column(self._time_field).cast(pa.int64()).to_numpy() // US_PER_DAY  # days since 1970
        cuts = (np.flatnonzero(np.diff(day_of)) + 1).tolist()
        out = {}
        for lo, hi in zip([0, *cuts], [*cuts, table.num_rows]):
            part = table.slice(lo, hi - lo)
            absent = [n for n in self._optional if n in part.column_names and part.column(n).null_count == part.num_rows]
            if absent:
                part = part.drop_columns(absent)
            out[EPOCH_ORDINAL + int(day_of[lo])] = part
        return out

    def write_temp_files(self, layout: LakeLayout) -> tuple[BatchRange, list[tuple[Path, Path]], dict]:
        """Step 1 of the commit protocol: every file under a fsynced temp name."""
        assert self.first is not None and self.last is not None
        batch = BatchRange(self.topic, self.partition, self.first, self.last)
        now = datetime.now(timezone.utc)
        valid = 0
        pending = []
        tables = self._date_tables(self._apply_batch_checks(self._batch_table(now)))
        with ThreadPoolExecutor(max_workers=WRITE_THREADS) as pool:
            for day, table in tables.items():
                final = layout.date_dir(self.topic, date.fromordinal(day).isoformat()) / f"{batch.stem}.parquet"
                pending.append((pool.submit(self._write, table, final), final))
                valid += table.num_rows
            moves: list[tuple[Path, Path]] = [(fut.result(), final) for fut, final in pending]
        if self.dead:
            offsets, keys, values, reasons, tss = zip(*self.dead)
            n = len(offsets)
            table = pa.Table.from_arrays([
                pa.array([self.topic] * n), pa.array([self.partition] * n, pa.int32()),
                pa.array(offsets, pa.int64()), pa.array(keys, pa.binary()), pa.array(values, pa.binary()),
                pa.array(reasons), pa.array(tss, pa.int64()), pa.array([now] * n, DEAD_LETTER_SCHEMA.field("_ingested_at").type),
            ], schema=DEAD_LETTER_SCHEMA)
            final = layout.dead_letter_dir(self.topic) / f"{batch.stem}.parquet"
            moves.append((self._write(table, final), final))
        counts = {"records": self.count, "valid": valid, "dead_lettered": len(self.dead)}
        return batch, moves, counts

    def _apply_batch_checks(self, table: pa.Table) -> pa.Table:
        """Run the declared batch checks over every row of the batch at once; take the
        failing rows out of the table and dead-letter them with their original bytes."""
        raw, self.raw = self.raw, {}
        blocks, self.raw_blocks = self.raw_blocks, []
        if not table.num_rows:
            return table
        frame = table.select([*self._checked, "_kafka_offset"])
        # Text columns stay Arrow strings in pandas: the checks on them (not null, patterns,
        # allowed values, duplicates) run in Arrow, not once per value in Python.
        df = frame.to_pandas(types_mapper=_ARROW_STRINGS.get).set_index("_kafka_offset", drop=True)
        # Each row's Kafka timestamp, found by offset in numpy (None: NaN).
        known = np.concatenate([np.asarray(b[0], np.int64) for b in blocks] + [np.fromiter(raw, np.int64, len(raw))])
        stamps = np.concatenate([np.asarray(b[3], np.float64) for b in blocks]
                                + [np.asarray([v[2] for v in raw.values()], np.float64)])
        order = np.argsort(known, kind="stable")
        at = order[np.searchsorted(known[order], df.index.to_numpy())]
        # Every row read as a block: the checks their field kinds do not imply, vectorised
        # (``event_checks.block_failures``); otherwise pandera over every row.
        failed = event_checks.block_failures(self.contract, df, stamps[at], self._max_ahead_s) if not raw else None
        if failed is None:
            df[event_checks.KAFKA_TIME] = event_checks.kafka_times(stamps[at], df.index)
            failed = event_checks.failures(self.contract, df, self._max_ahead_s)
        if not failed:
            return table
        offsets = table.column("_kafka_offset")
        hit = pc.is_in(offsets, value_set=pa.array(sorted(failed), pa.int64()))
        for o in pc.filter(offsets, hit).to_pylist():
            name, why = failed[o]
            key, value, ts = raw[o] if o in raw else _in_blocks(blocks, o)
            self.dead.append((o, key, value, _reason(f"check {name}: {why}"), ts))
        return table.filter(pc.invert(hit))

    def _write(self, table: pa.Table, final: Path) -> Path:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(TMP_PREFIX + final.name)
        pq.write_table(
            table, tmp, compression=self.limits.compression,
            row_group_size=self.limits.row_group_records, write_statistics=True,
        )
        fsync(tmp)
        return tmp
