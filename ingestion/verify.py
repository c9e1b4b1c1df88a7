"""The auditor: read the lake and the dead letters back and account for every offset.

Per topic and partition it reports how many offsets landed as valid rows and as dead
letters, the offset range, duplicates (an offset landed twice) and gaps: offsets that
hold a record in Kafka but landed nowhere. With the broker (the default) this is
checked against Kafka itself, read ``read_committed`` like the consumer:

- the range to account for runs from the partition's first offset still in Kafka to
  the group's committed offset (or the last landed one, if the lake is ahead);
- an offset missing from the lake is a gap only if Kafka holds a record there that a
  consumer sees: transaction commit/abort markers and records of aborted transactions
  occupy offsets no consumer is given, so the auditor reads the missing ranges back from
  the broker and counts those as ``markers_or_aborted``, not as lost;
- ``lag`` is how far the group is behind the partition's end (its last stable offset),
  0 when all that is left there is markers.

When no broker answers the audit stops at once with an error saying so; ``lake_only``
(``skewless ingest verify --lake-only``) audits the lake alone, where every missing
offset between landed ones is reported as a gap (a marker cannot be told from a lost
record without the broker).
"""

from __future__ import annotations

import bisect
import time
from typing import Any

import numpy as np
import pyarrow.dataset as ds

from skewless.lake_layout import LakeLayout
from skewless.errors import ServiceError
from skewless.settings import Settings

MAX_GAPS_LISTED = 20
READ_STALL_S = 30.0  # no progress reading a partition for this long: the check could not run
SEEK_AHEAD = 10_000  # read on through a stretch this short instead of seeking to the next range


def _offsets(files: list[str], partition_col: str, offset_col: str) -> dict[int, np.ndarray]:
    if not files:  # nothing landed, or the first batch still under temp names
        return {}
    table = ds.dataset(files, format="parquet").to_table(columns=[partition_col, offset_col])
    if table.num_rows == 0:
        return {}
    parts = table.column(partition_col).to_numpy()
    offs = table.column(offset_col).to_numpy()
    return {int(p): offs[parts == p] for p in np.unique(parts)}


def missing_ranges(offsets: np.ndarray, start: int | None = None, end: int | None = None) -> list[tuple[int, int]]:
    """The offsets in [start, end) not in ``offsets``, as (first, last) ranges, all of them.

    ``start`` defaults to the first offset present, ``end`` to one past the last one.
    """
    u = np.unique(offsets)
    lo = start if start is not None else (int(u[0]) if len(u) else 0)
    hi = end if end is not None else (int(u[-1]) + 1 if len(u) else 0)
    if hi <= lo:
        return []
    u = u[(u >= lo) & (u < hi)]
    edges = np.concatenate([[lo - 1], u, [hi]])
    idx = np.flatnonzero(np.diff(edges) > 1)
    return [(int(edges[i] + 1), int(edges[i + 1] - 1)) for i in idx]


def _count(ranges: list[tuple[int, int]]) -> int:
    return sum(b - a + 1 for a, b in ranges)


def _as_ranges(offsets: list[int]) -> list[tuple[int, int]]:
    """Sorted distinct offsets -> consecutive (first, last) runs."""
    runs: list[tuple[int, int]] = []
    for o in offsets:
        if runs and o == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], o)
        else:
            runs.append((o, o))
    return runs


class BrokerView:
    """The broker's side of the audit: offsets, and which offsets hold a visible record.

    Construction fails fast (seconds) with a ``ServiceError`` naming the broker when none
    answers; so does any request that cannot complete.
    """

    def __init__(self, settings: Settings):
        from kafka import KafkaConsumer
        from kafka.errors import KafkaError

        self.settings = settings
        self.servers = ",".join(settings.kafka.bootstrap_servers)
        try:
            self.consumer = KafkaConsumer(
                **settings.kafka.client_config(), group_id=settings.kafka.consumer_group,
                enable_auto_commit=False, isolation_level="read_committed",
                auto_offset_reset="none",  # an offset gone meanwhile is an error, never a silent jump
                bootstrap_timeout_ms=5000, reconnect_backoff_max_ms=1000, request_timeout_ms=10000,
                max_partition_fetch_bytes=1024 * 1024,
                metrics_enabled=False)
        except (KafkaError, OSError, ValueError) as exc:
            raise self.unavailable(f"no Kafka broker answers at {self.servers}") from exc

    def unavailable(self, problem: BaseException | str) -> ServiceError:
        if isinstance(problem, BaseException):
            problem = f"the Kafka broker at {self.servers} failed a request: {problem}"
        return ServiceError(
            f"the offset check could not run: {problem}",
            "start it with: skewless services up; or audit the lake alone: skewless ingest verify --lake-only",
        )

    def close(self) -> None:
        try:
            self.consumer.close(autocommit=False, timeout_ms=2000)
        except Exception:  # noqa: BLE001 - closing a client that never connected
            pass

    def offsets(self, topic: str) -> dict[int, dict[str, int | None]]:
        """Per partition: the group's committed offset, the first offset still in Kafka and
        the end (the last stable offset: read_committed)."""
        from kafka import TopicPartition
        from kafka.errors import KafkaError

        c = self.consumer
        try:
            parts = c.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            if not tps:
                return {}
            ends = c.end_offsets(tps)
            begins = c.beginning_offsets(tps)
            return {tp.partition: {"committed": c.committed(tp, timeout_ms=10000), "end": ends.get(tp),
                                   "begin": begins.get(tp)} for tp in tps}
        except KafkaError as exc:
            raise self.unavailable(exc) from exc

    def visible(self, topic: str, partition: int, ranges: list[tuple[int, int]]) -> list[int]:
        """The offsets within ``ranges`` (sorted, disjoint) that hold a record a
        read_committed consumer is given, read back from the broker."""
        from kafka import TopicPartition

        tp = TopicPartition(topic, partition)
        c = self.consumer
        starts = [a for a, _ in ranges]
        found: set[int] = set()
        c.assign([tp])
        c.seek(tp, ranges[0][0])
        for lo, hi in ranges:
            pos = c.position(tp)
            if pos > hi:
                continue  # read past it already
            if pos < lo - SEEK_AHEAD:
                c.seek(tp, lo)
            for offset in self._read(tp, until=hi + 1):
                i = bisect.bisect_right(starts, offset) - 1
                if i >= 0 and offset <= ranges[i][1]:
                    found.add(offset)
        return sorted(found)

    def first_visible(self, topic: str, partition: int, start: int, end: int) -> int | None:
        """The first offset in [start, end) that holds a visible record, or None."""
        from kafka import TopicPartition

        tp = TopicPartition(topic, partition)
        self.consumer.assign([tp])
        self.consumer.seek(tp, start)
        for offset in self._read(tp, until=end, max_records=1):
            return offset if offset < end else None
        return None

    def _read(self, tp, until: int, max_records: int = 500):
        """Yield the offsets of the records read from the current position until the
        position reaches ``until`` (it moves past markers and aborted records too); a
        stall of READ_STALL_S is an error."""
        from kafka.errors import KafkaError

        c = self.consumer
        pos = c.position(tp)
        moved_at = time.monotonic()
        while pos < until:
            try:
                records = c.poll(timeout_ms=500, max_records=max_records).get(tp, [])
                new = c.position(tp)
            except KafkaError as exc:
                raise self.unavailable(exc) from exc
            for r in records:
                yield r.offset
            if new > pos:
                pos, moved_at = new, time.monotonic()
            elif time.monotonic() - moved_at > READ_STALL_S:
                raise ServiceError(f"the offset check could not run: reading {tp.topic} partition {tp.partition} "
                                   f"from the broker at {self.servers} made no progress past offset {pos} "
                                   f"in {READ_STALL_S:.0f}s")


def _partition_entry(v: np.ndarray, d: np.ndarray, k: dict, broker: BrokerView | None,
                     topic: str, p: int) -> dict[str, Any]:
    allo = np.concatenate([v, d])
    uniq = np.unique(allo)
    last = int(uniq[-1]) if len(uniq) else None
    # Everything from the first offset still in Kafka up to the committed offset must be
    # accounted for (or up to the last landed one, if the lake is ahead of the group).
    start = k.get("begin")
    ends = [x for x in (k.get("committed"), None if last is None else last + 1) if x is not None]
    missing = missing_ranges(allo, start, max(ends)) if ends else []
    if broker is not None and missing:
        lost = _as_ranges(broker.visible(topic, p, missing))
        markers: int | None = _count(missing) - _count(lost)
    else:
        lost, markers = missing, (0 if broker is not None else None)
    lag = None
    if broker is not None and k.get("end") is not None:
        behind_from = k["committed"] if k.get("committed") is not None else (k.get("begin") or 0)
        lag = 0
        if k["end"] > behind_from:
            first = broker.first_visible(topic, p, behind_from, k["end"])
            lag = 0 if first is None else k["end"] - first
    entry = {
        "valid": int(len(v)), "dead_lettered": int(len(d)), "landed": int(len(allo)),
        "first": int(uniq[0]) if len(uniq) else None, "last": last,
        "duplicates": int(len(allo) - len(uniq)),
        "gaps": [list(r) for r in lost[:MAX_GAPS_LISTED]], "lost": _count(lost),
        "markers_or_aborted": markers,
        "committed": k.get("committed"), "end_offset": k.get("end"),
        # Records in Kafka not landed yet (not an error: the consumer may be behind).
        "lag": lag,
    }
    entry["ok"] = entry["duplicates"] == 0 and not lost
    return entry


def verify(settings: Settings, topics: list[str] | None = None, check_kafka: bool = True) -> dict[str, Any]:
    """Audit ``topics`` (default: all); ``check_kafka=False`` audits the lake alone."""
    layout = LakeLayout.of(settings)
    topics = topics or list(settings.topics.by_contract().values())
    broker = BrokerView(settings) if check_kafka else None
    report: dict[str, Any] = {"topics": {}, "ok": True, "kafka_checked": check_kafka}
    try:
        for topic in topics:
            # The raw rows as every reader sees them (``LakeLayout.raw_files``: a compaction's
            # inputs or its output, never both); dead letters are never compacted.
            valid = _offsets([str(f.path) for f in layout.raw_files(topic)], "_kafka_partition", "_kafka_offset")
            dl = layout.dead_letter_dir(topic)
            dead = _offsets([str(p) for p in sorted(dl.glob("*.parquet")) if not p.name.startswith((".", "_"))]
                            if dl.is_dir() else [], "partition", "offset")
            kafka = broker.offsets(topic) if broker is not None else {}
            empty = np.array([], dtype=np.int64)
            parts = {str(p): _partition_entry(valid.get(p, empty), dead.get(p, empty), kafka.get(p, {}), broker, topic, p)
                     for p in sorted(set(valid) | set(dead) | set(kafka))}
            report["ok"] &= all(e["ok"] for e in parts.values())
            totals = {key: sum(e[key] for e in parts.values())
                      for key in ("valid", "dead_lettered", "landed", "duplicates", "lost")}
            totals["lag"] = sum(e["lag"] or 0 for e in parts.values()) if broker is not None else None
            totals["gaps"] = sum(len(e["gaps"]) for e in parts.values())
            totals["markers_or_aborted"] = (sum(e["markers_or_aborted"] or 0 for e in parts.values())
                                            if broker is not None else None)
            report["topics"][topic] = {"partitions": parts, **totals}
    finally:
        if broker is not None:
            broker.close()
    return report
