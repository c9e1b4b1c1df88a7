"""Every prediction, sent to the ``predictions`` topic without ever slowing one down, and
none lost while Kafka is away.

``submit`` only puts the record on a bounded in-memory queue (never blocks, never
raises). One daemon thread, the sender, owns the rest; whatever can block (connecting,
probing the broker, reading the topic back) runs on a short-lived helper thread whose
result the sender picks up, so the queue keeps draining while Kafka is away.

- **Sent means acknowledged.** A record counts as ``sent`` only when the broker
  acknowledges it (the idempotent producer, ``acks=all``: the client's own retries write
  a record once).
- **Kafka away: spill.** A delivery that fails, or an acknowledgement that does not come
  within ``ack_timeout_s``, marks Kafka unavailable: from then on records go to a bounded
  durable spill on disk (``serving/spill.py``, under ``<state_dir>/prediction-log/<topic>``,
  ``serving.log_spill_max_bytes`` per process). Every ``retry_s`` a probe asks the broker
  for the topic's end offsets; when it answers, the spill is replayed in order, oldest
  segment first, and while the spill holds records new ones queue behind them. Records
  already with the client when Kafka went away are retried by the client; the ones it
  gives up on (after 15 s) join the spill, marked as possibly written.
- **No duplicates.** A record the client gave up on may still have been written (the
  broker wrote it, the answer was lost). Before such a record is sent again, the topic is
  read from the record's timestamp (every record is sent with an explicit timestamp) and
  a record whose exact bytes are already there is not sent again: it counts as ``sent``
  and ``found_in_topic``. The same holds for a spill segment whose replay was cut short.
  So each record is in the topic once, provided the broker writes a request it accepted
  before the topic is read back (the next probe, ``retry_s`` later at the soonest).
- **Dropped is counted and said.** Only when the in-memory queue or the spill is full is
  a record dropped: counted in ``dropped`` and in ``/metrics``, with a warning (at most
  one every 10 s) giving the count. Records in the in-memory queue or with the client
  are lost if the server process itself is killed (-9); on a normal stop they go to the
  spill.
- **Several processes.** Each process has its own spill directory, locked while it
  runs. A spill left by a process that is gone (a restart, a crashed worker) is adopted
  by the next process that starts, reconnects, or looks (every minute), then replayed and
  removed.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import orjson

from serving import metrics
from serving.spill import Segment, Spill, SpilledRecord, encode
from skewless.settings import Settings

log = logging.getLogger(__name__)

WARN_EVERY_S = 10.0
ADOPT_EVERY_S = 60.0
SPILL_FULL = "Kafka was unavailable and the spill full (serving.log_spill_max_bytes)"
QUEUE_FULL = "the in-memory queue was full (serving.log_queue_size)"


def spill_root(settings: Settings) -> Path:
    return settings.state_dir / "prediction-log" / settings.topics.predictions


def _digest(value: bytes) -> bytes:
    return hashlib.blake2b(value, digest_size=16).digest()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _in_background(fn: Callable[[], Any]) -> Future:
    """Run one blocking Kafka call on a daemon thread (a stuck call never holds up exit)."""
    fut: Future = Future()

    def run() -> None:
        try:
            fut.set_result(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the sender thread
            fut.set_exception(exc)

    threading.Thread(target=run, name="prediction-log-kafka", daemon=True).start()
    return fut


@dataclass
class _Pending:
    """A record handed to the producer, waiting for its acknowledgement."""

    ts: int
    key: str
    value: bytes
    handed_at: float
    replay: "_Replay | None" = None
    index: int = -1


@dataclass
class _Replay:
    """The spill segment being replayed."""

    spill: Spill
    segment: Segment
    records: list[SpilledRecord]
    uncertain: bool  # some records may already be in the topic: look before sending
    confirmed: set[int] = field(default_factory=set)  # indexes acknowledged or found in the topic
    outstanding: int = 0
    handed: bool = False  # every record not yet confirmed is with the client
    failed: bool = False
    seen: set[bytes] | None = None  # digests of this segment's values found in the topic


class PredictionLog:
    def __init__(self, settings: Settings, retry_s: float = 2.0, ack_timeout_s: float = 5.0,
                 segment_bytes: int = 4 * 1024 * 1024):
        self.settings = settings
        self.topic = settings.topics.predictions
        self.queue: queue.Queue = queue.Queue(maxsize=settings.serving.log_queue_size)
        self.retry_s = retry_s
        self.ack_timeout_s = ack_timeout_s
        self.segment_bytes = segment_bytes
        self.root = spill_root(settings)
        # Counters: the sender thread writes them all but _dropped_queue (submit's).
        self.sent = 0  # acknowledged by the broker, or found in the topic
        self.replayed = 0  # of sent: acknowledged when replayed from a spill
        self.found_in_topic = 0  # of sent: a possibly-written spilled record found there already
        self.failed = 0  # deliveries that ended without an acknowledgement (the record was spilled)
        self._dropped_queue = 0
        self._dropped_spill = 0
        self.connected = False  # Kafka answered the last probe and nothing failed since
        # Made here, not on the sender thread: an unwritable state_dir stops the start.
        self.spill = Spill.create(self.root, settings.serving.log_spill_max_bytes, segment_bytes=segment_bytes)
        self.adopted: list[Spill] = []
        self._producer: Any = None
        self._renew_producer = False
        self._consumer: Any = None
        self._topic_ready = False
        self._inflight: dict[int, _Pending] = {}
        self._acks: deque = deque()  # (seq, exception or None), appended by the client's thread
        self._seq = itertools.count()
        self._replay: _Replay | None = None
        self._job: tuple[str, Future] | None = None  # the one blocking Kafka call under way
        self._next_connect = 0.0
        self._progress_at = 0.0  # last acknowledgement, or when Kafka came back
        self._next_adopt = 0.0
        self._shown = (0, 0)  # spill records/bytes last published to the gauges
        self._drops_unreported: dict[str, int] = {}  # reason -> count since the last warning
        self._drops_reported_at = -WARN_EVERY_S
        self._queue_drops_seen = 0
        self._away_warned_at = -WARN_EVERY_S
        self._closing = threading.Event()
        self._close_by = 0.0
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    # -- the request path -------------------------------------------------------------
    def submit(self, record: dict[str, Any]) -> bool:
        if not self._stopped:
            try:
                self.queue.put_nowait(record)
                return True
            except queue.Full:
                pass
        self._dropped_queue += 1
        metrics.LOG_DROPPED.inc()
        return False

    # -- what the log reports ---------------------------------------------------------
    @property
    def dropped(self) -> int:
        return self._dropped_queue + self._dropped_spill

    @property
    def spilled_records(self) -> int:
        return sum(s.records for s in self._spills())

    @property
    def spilled_bytes(self) -> int:
        return sum(s.bytes for s in self._spills())

    def close(self, timeout: float = 5.0) -> None:
        """Keep delivering (spill replays included) until nothing is pending or for up
        to ``timeout`` seconds; what Kafka has not acknowledged by then stays in the spill
        for the next start."""
        self._close_by = time.monotonic() + max(0.0, timeout - 0.5)
        self._closing.set()
        self._thread.join(timeout)

    # -- the sender thread --------------------------------------------------------------
    def _spills(self) -> list[Spill]:
        return [*self.adopted, self.spill]

    def _run(self) -> None:
        try:
            self._adopt()
            while True:
                closing = self._closing.is_set()
                self._pump(wait_s=0.0 if closing else 0.05)
                self._settle()
                if closing and (self._late() or self._drained()):
                    break
                self._connect_step()
                self._replay_step()
                self.spill.sync()
                self._publish()
                self._report_drops()
        except Exception:  # noqa: BLE001 - a bug here must not pass silently
            log.exception("prediction log: the sender stopped; predictions from now on are counted as dropped")
        finally:
            self._shut_down()

    def _late(self) -> bool:
        return self._closing.is_set() and time.monotonic() >= self._close_by

    def _drained(self) -> bool:
        return self.queue.empty() and not self._inflight and not self.spilled_records

    def _pump(self, wait_s: float, direct: bool = True) -> None:
        """Take what is queued: to Kafka while it answers and the spill is empty, else
        behind the spill (and to Kafka after all when the spill is full: better out of
        order than lost)."""
        try:
            batch = [self.queue.get(timeout=wait_s) if wait_s else self.queue.get_nowait()]
        except queue.Empty:
            return
        while len(batch) < 2000:
            try:
                batch.append(self.queue.get_nowait())
            except queue.Empty:
                break
        ts = int(time.time() * 1000)
        entries = []
        for r in batch:
            try:
                entries.append((str(r["request_id"]), orjson.dumps(r)))
            except Exception as exc:  # noqa: BLE001 - one bad record must not stop the log
                self._drop(1, f"they could not be encoded ({type(exc).__name__})")
        if not entries:
            return
        direct = direct and self.connected
        if not (direct and not self._behind_spill()):
            taken = self.spill.append([encode(ts, False, k, v) for k, v in entries])
            entries = entries[taken:]
            if not entries:
                return
            if not direct:
                self._drop(len(entries), SPILL_FULL)
                return
        for i, (key, value) in enumerate(entries):
            if not self._send(ts, key, value):
                rest = entries[i:]
                self._drop(len(rest) - self.spill.append([encode(ts, False, k, v) for k, v in rest]), SPILL_FULL)
                return

    def _behind_spill(self) -> bool:
        """Whether new records must queue behind this process's spill: it holds records
        not yet handed to the client. (Once the last segment is handed over, records sent
        after it stay after it: the idempotent client keeps each partition's order.)"""
        r = self._replay
        for seg in self.spill.segments:
            if seg.records and not (r is not None and r.segment is seg and r.handed and not r.failed):
                return True
        return False

    def _send(self, ts: int, key: str, value: bytes, replay: _Replay | None = None, index: int = -1) -> bool:
        seq = next(self._seq)
        self._inflight[seq] = _Pending(ts, key, value, time.monotonic(), replay, index)
        try:
            fut = self._producer.send(self.topic, key=key.encode(), value=value, timestamp_ms=ts)
        except Exception as exc:  # noqa: BLE001 - not handed over (no metadata, buffer full): not written
            del self._inflight[seq]
            self._unavailable(f"send failed: {type(exc).__name__}: {exc}")
            return False
        if replay is not None:
            replay.outstanding += 1
        fut.add_callback(self._on_ack, seq)
        fut.add_errback(self._on_error, seq)
        return True

    def _on_ack(self, seq: int, _metadata: Any) -> None:  # the client's thread
        self._acks.append((seq, None))

    def _on_error(self, seq: int, exc: BaseException) -> None:  # the client's thread
        self._acks.append((seq, exc))

    def _settle(self) -> None:
        """Count acknowledgements; spill what failed; notice a broker that stopped answering."""
        acked = replayed = 0
        failed: list[_Pending] = []
        while self._acks:
            seq, exc = self._acks.popleft()
            p = self._inflight.pop(seq, None)
            if p is None:
                continue
            if p.replay is not None:
                p.replay.outstanding -= 1
            if exc is None:
                acked += 1
                if p.replay is not None:
                    replayed += 1
                    p.replay.confirmed.add(p.index)
                continue
            failed.append(p)
            if p.replay is not None:
                p.replay.failed = True
            self._renew_producer = True
            self._unavailable(f"delivery failed: {type(exc).__name__}: {exc}")
        now = time.monotonic()
        if acked:
            self._progress_at = now
            self.sent += acked
            self.replayed += replayed
            metrics.LOG_SENT.inc(acked)
            if replayed:
                metrics.LOG_REPLAYED.inc(replayed)
        if failed:
            self.failed += len(failed)
            metrics.LOG_FAILED.inc(len(failed))
            # Possibly written: the broker may have written it and its answer been lost.
            # (A replayed record is still in its segment, which is now looked up before
            # it is sent again.)
            lines = [encode(p.ts, True, p.key, p.value) for p in failed if p.replay is None]
            self._drop(len(lines) - self.spill.append(lines), SPILL_FULL)
        if self.connected and self._inflight:
            oldest = next(iter(self._inflight.values()))
            if now - max(oldest.handed_at, self._progress_at) > self.ack_timeout_s:
                self._unavailable(f"no acknowledgement for {self.ack_timeout_s:g}s")

    def _drop(self, count: int, reason: str) -> None:
        """Records the log cannot keep: counted here, said by ``_report_drops``."""
        if count <= 0:
            return
        self._dropped_spill += count
        metrics.LOG_DROPPED.inc(count)
        self._drops_unreported[reason] = self._drops_unreported.get(reason, 0) + count

    def _report_drops(self, now: bool = False) -> None:
        """At most one warning every WARN_EVERY_S, with the counts and reasons since the last."""
        new = self._dropped_queue - self._queue_drops_seen
        if new:
            self._queue_drops_seen += new
            reason = QUEUE_FULL if not self._stopped else "they came after the log had stopped"
            self._drops_unreported[reason] = self._drops_unreported.get(reason, 0) + new
        t = time.monotonic()
        if self._drops_unreported and (now or t - self._drops_reported_at >= WARN_EVERY_S):
            log.warning("prediction log: %d predictions dropped since the last report (%d in all): %s",
                        sum(self._drops_unreported.values()), self.dropped,
                        "; ".join(f"{n} because {why}" for why, n in self._drops_unreported.items()))
            self._drops_unreported, self._drops_reported_at = {}, t

    def _unavailable(self, reason: str) -> None:
        if self.connected:
            self.connected = False
            log.warning("prediction log: Kafka unavailable (%s); predictions go to the spill in %s until it "
                        "answers", reason, self.spill.directory)
        self._next_connect = time.monotonic() + self.retry_s

    # -- blocking Kafka calls, one at a time on a helper thread ---------------------------
    def _connect_step(self) -> None:
        if self._job is None:
            if not self.connected and time.monotonic() >= self._next_connect and not self._late():
                if self._renew_producer and not self._inflight and self._producer is not None:
                    # A fresh client session after failed deliveries (nothing of ours is in it).
                    self._close_producer()
                self._job = ("connect", _in_background(self._connect))
            return
        kind, fut = self._job
        if not fut.done():
            return
        if kind != "connect":
            if not self.connected:  # a read-back that ended after Kafka went away: read again later
                self._job = None
            return
        self._job = None
        try:
            self._producer = fut.result()
        except Exception as exc:  # noqa: BLE001
            self._next_connect = time.monotonic() + self.retry_s
            now = time.monotonic()
            if now - self._away_warned_at >= WARN_EVERY_S:
                log.warning("prediction log: Kafka unavailable (%s: %s); %d predictions in the spill",
                            type(exc).__name__, str(exc)[:200], self.spilled_records)
                self._away_warned_at = now
            return
        self._renew_producer = False
        self.connected = True
        self._progress_at = time.monotonic()
        self._away_warned_at = -WARN_EVERY_S
        self._adopt()
        if self.spilled_records:
            log.warning("prediction log: Kafka answers; replaying %d spilled predictions", self.spilled_records)

    def _connect(self) -> Any:
        """Helper thread: create the topic, the producer and the probe consumer (once),
        then probe: the broker must give the topic's metadata and end offsets."""
        from kafka import KafkaConsumer, KafkaProducer, TopicPartition

        from skewless.topics import ensure_topics

        if not self._topic_ready:
            ensure_topics(self.settings, [self.topic])
            self._topic_ready = True
        client = self.settings.kafka.client_config()
        producer = self._producer or KafkaProducer(
            **client, enable_idempotence=True, acks="all", linger_ms=20, max_block_ms=1000,
            request_timeout_ms=5000, delivery_timeout_ms=15000, bootstrap_timeout_ms=5000,
            compression_type=None, metrics_enabled=False)
        try:
            producer.partitions_for(self.topic)  # metadata now, so that send() never waits for it
            if self._consumer is None:
                self._consumer = KafkaConsumer(**client, group_id=None, enable_auto_commit=False,
                                               request_timeout_ms=10000, bootstrap_timeout_ms=5000,
                                               metrics_enabled=False)
            partitions = self._consumer.partitions_for_topic(self.topic)
            if not partitions:
                raise RuntimeError(f"no partitions known for topic {self.topic}")
            self._consumer.end_offsets([TopicPartition(self.topic, p) for p in partitions], timeout_ms=5000)
        except Exception:
            if producer is not self._producer:  # made by this attempt, holds nothing
                producer.close(timeout=0)
            raise
        return producer

    def _scan(self, since_ms: int, keys: frozenset[bytes]) -> set[bytes]:
        """Helper thread: digests of the values under ``keys`` in the topic, from
        timestamp ``since_ms`` to its current end (a record sent with timestamp t is at
        or after the offset Kafka gives for t)."""
        from kafka import TopicPartition

        consumer = self._consumer
        tps = [TopicPartition(self.topic, p) for p in sorted(consumer.partitions_for_topic(self.topic) or ())]
        consumer.assign(tps)
        end = consumer.end_offsets(tps, timeout_ms=10000)
        start = consumer.offsets_for_times({tp: since_ms for tp in tps}, timeout_ms=10000)
        todo = set()
        for tp in tps:
            first = start[tp].offset if start.get(tp) is not None else end[tp]
            consumer.seek(tp, first)
            if first < end[tp]:
                todo.add(tp)
        seen: set[bytes] = set()
        while todo:
            for tp, messages in consumer.poll(timeout_ms=500, max_records=5000).items():
                for m in messages:
                    if m.offset < end[tp] and m.key in keys:
                        seen.add(_digest(m.value))
            for tp in list(todo):
                if consumer.position(tp) >= end[tp]:
                    todo.discard(tp)
        consumer.assign([])
        return seen

    def _close_producer(self) -> None:
        """Close the client now: what it still holds is failed, never sent later
        (``close(timeout=0)`` flushes first and raises while records are pending, so the
        client's sender thread is stopped first)."""
        producer, self._producer = self._producer, None
        sender = getattr(producer, "_sender", None)
        if sender is not None:
            sender.force_close()
        try:
            producer.close(timeout=1)
        except Exception:  # noqa: BLE001
            pass

    # -- replaying spills -------------------------------------------------------------------
    def _adopt(self) -> None:
        self._next_adopt = time.monotonic() + ADOPT_EVERY_S
        found = Spill.adopt_orphans(self.root, segment_bytes=self.segment_bytes)
        if found:
            log.warning("prediction log: adopted %d predictions spilled by a process that is gone (%s)",
                        sum(s.records for s in found), ", ".join(s.directory.name for s in found))
            self.adopted.extend(found)
        for spill in found:  # a dead worker's spill gauges must not be summed any more
            pid = int(spill.directory.name.split("-")[0])
            if pid != os.getpid() and not _alive(pid):
                metrics.forget_dead_process(pid)

    def _replay_step(self) -> None:
        if not self.connected or self._late():
            return
        if time.monotonic() >= self._next_adopt:
            self._adopt()
        r = self._replay
        if r is None:
            r = self._replay = self._next_replay()
            if r is None:
                return
        if r.outstanding:
            return  # waiting for acknowledgements
        if r.failed:  # an attempt failed, and every answer is in: some may have been written
            r.failed, r.handed, r.uncertain, r.seen = False, False, True, None
        if r.uncertain and r.seen is None:
            if self._job is None:
                unsure = [rec for i, rec in enumerate(r.records) if i not in r.confirmed]
                since, keys = min(rec.ts for rec in unsure), frozenset(rec.key.encode() for rec in unsure)
                self._job = ("scan", _in_background(lambda: self._scan(since, keys)))
                return
            kind, fut = self._job
            if kind != "scan" or not fut.done():
                return
            self._job = None
            try:
                r.seen = fut.result()
            except Exception as exc:  # noqa: BLE001
                self._unavailable(f"reading the topic back failed: {type(exc).__name__}: {exc}")
                return
        r.spill.mark(r.segment)
        found = 0
        for i, rec in enumerate(r.records):
            if i in r.confirmed:
                continue
            if r.seen is not None and _digest(rec.value) in r.seen:
                r.confirmed.add(i)
                found += 1
            elif not self._send(rec.ts, rec.key, rec.value, r, i):
                break
        else:
            r.handed = True
        if found:
            self.sent += found
            self.found_in_topic += found
            metrics.LOG_SENT.inc(found)
            metrics.LOG_FOUND.inc(found)
        if len(r.confirmed) == len(r.records):
            self._finish_replay(r)

    def _next_replay(self) -> _Replay | None:
        for spill in self._spills():
            seg = spill.next_to_replay()
            if seg is None:
                continue
            before = spill.unreadable
            records = spill.read(seg)
            if spill.unreadable > before:
                self._drop(spill.unreadable - before, f"they were unreadable in {seg.path} (torn by a crash?)")
            uncertain = spill.is_marked(seg) or any(rec.uncertain for rec in records)
            return _Replay(spill, seg, records, uncertain)
        return None

    def _finish_replay(self, r: _Replay) -> None:
        r.spill.remove(r.segment)
        self._replay = None
        if r.spill is not self.spill and not r.spill.records:
            r.spill.close()
            self.adopted.remove(r.spill)
        if not self.spilled_records:
            log.warning("prediction log: spill replayed; predictions go straight to Kafka again")

    def _publish(self) -> None:
        shown = (self.spilled_records, self.spilled_bytes)
        if shown != self._shown:
            metrics.LOG_SPILL_RECORDS.inc(shown[0] - self._shown[0])
            metrics.LOG_SPILL_BYTES.inc(shown[1] - self._shown[1])
            self._shown = shown

    # -- stopping ---------------------------------------------------------------------------
    def _shut_down(self) -> None:
        """Records still with the client join the spill (possibly written), the client is
        closed without waiting, and the spill is synced and released for the next start."""
        self._report_drops()  # (queue drops so far are the queue's; later ones came after the stop)
        self._stopped = True
        self._settle()
        unanswered = [p for p in self._inflight.values() if p.replay is None]
        self._inflight.clear()
        if self._producer is not None:
            self._close_producer()
        lines = [encode(p.ts, True, p.key, p.value) for p in unanswered]
        self._drop(len(lines) - self.spill.append(lines), SPILL_FULL)
        while not self.queue.empty():  # whatever was submitted meanwhile
            self._pump(wait_s=0.0, direct=False)
        self._report_drops(now=True)
        if self._consumer is not None and self._job is None:
            self._consumer.close()
        left = self.spilled_records
        for spill in self._spills():
            spill.close()
        metrics.LOG_SPILL_RECORDS.dec(self._shown[0])
        metrics.LOG_SPILL_BYTES.dec(self._shown[1])
        self._shown = (0, 0)
        if left:
            log.warning("prediction log: stopped with %d predictions in the spill (%s); the next start replays them",
                        left, self.spill.directory)
