"""The Kafka -> lake sink: a kafka-python consumer group that lands every event exactly once.

See ``skewless.lake_layout`` for the file layout and ``ingestion.lake_files`` for the
commit protocol. Auto-commit is off; offsets are committed only after a batch's files
are renamed into place. On every partition assignment the partition is recovered and
the consumer seeks past what already landed; on revocation open batches are flushed
and committed first.

A full batch lands in the background (one lander thread) while the consumer polls and
validates the next records: building its tables, the batch checks, Parquet encoding and
compression, fsync, the manifest and the renames. Encoding, compression and fsync release
the GIL, so they overlap the poll loop. A partition has at most one batch landing at a
time (its batches land in offset order, which recovery relies on), its offsets are
committed only once it landed, and at most ``MAX_LANDING`` closed batches wait or land
at once: memory is bounded by (assigned partitions + ``MAX_LANDING``) x ``flush_records``
records (and ``flush_bytes`` message bytes) per batch, plus the last poll's records
(``max_poll_records``), read as blocks on a reader thread while the next poll fetches
(``LakeSink.take_poll``).

Runs until SIGTERM/SIGINT (flush, commit, exit) or, with ``until_idle``, until no
message arrived for that many seconds. A signal also interrupts a poll or commit that is
waiting on Kafka, so a stop is prompt even while the broker is away; a second signal
exits at once (landed data is safe: the open batch is read again by the next run).

Errors from Kafka that a retry cannot fix (a batch in a codec no library here reads, a
corrupt batch, a refused authorization...) stop the consumer with ``ConsumeHalted``,
after landing and committing what it had: never a silent retry loop. Retriable ones
(the broker restarting, a network blip) are retried.

Offsets that hold no record a consumer sees (transaction commit/abort markers, records
of aborted transactions; the consumer reads ``read_committed``) are committed past once
the partition's open batch has landed, so they do not show as lag.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import (CorruptRecordError, KafkaError, LeaderNotAvailableError, UnknownTopicOrPartitionError,
                          UnsupportedCodecError)

from ingestion.batch import PartitionBatch
from skewless.contracts import contract_for_topic
from skewless.topics import ensure_topics
from ingestion.faults import crash_point
from ingestion.lake_files import recover_partition, roll_forward, write_manifest
from skewless.errors import ServiceError, SkewlessError
from skewless.lake_layout import LakeLayout
from skewless.settings import Settings

log = logging.getLogger(__name__)

COMMIT_TIMEOUT_MS = 10_000  # a commit while the broker is away gives up (and is retried) after this
REBALANCE_WAIT_S = 60.0  # how long an idle stop waits for a rebalance in flight to assign partitions again
CLOSE_TIMEOUT_MS = 3_000  # bounds the last commit and leaving the group, so a stop is prompt
METADATA_TIMEOUT_MS = 30_000  # the subscribed topics' metadata before the first join
RETRY_WARN_EVERY_S = 30.0
# Closed batches waiting or landing at once, on the hot path (see the module docstring).
MAX_LANDING = 2
# Lander threads. One: batches land one at a time, in the order closed (the crash tests
# assert each step of one batch's landing), and 4 measured no faster: at the end of a run,
# landing the open batches is CPU- and GIL-bound (tables, batch checks, Parquet), not fsync-bound.
LANDERS = 1

# kafka-python's name for a codec -> the package that gives it the codec (see kafka/codec.py).
CODEC_PACKAGES = {"lz4": "lz4", "zstd": "zstandard", "snappy": "python-snappy"}


class ConsumeHalted(SkewlessError):
    """Kafka handed the consumer something it can never read: retrying would fail the
    same way. What landed before it is committed; the next run resumes at it."""


class LakeSink:
    """Owns the open batches of the assigned partitions and lands them."""

    def __init__(self, settings: Settings, consumer: KafkaConsumer):
        self.settings = settings
        self.consumer = consumer
        self.layout = LakeLayout.of(settings)
        self.topics_by_contract = settings.topics.by_contract()
        self.batches: dict[TopicPartition, PartitionBatch] = {}
        self.pending_commits: dict[TopicPartition, int] = {}
        self.committed: dict[TopicPartition, int] = {}  # what this run committed (settle skips these)
        self.stats: dict[str, dict[str, int]] = {}
        # When each open batch got its first record (monotonic): ``flush_aged`` lands a batch
        # once it is ``max_batch_age_s`` old, so a trickle's events wait a bounded time.
        self.opened_at: dict[TopicPartition, float] = {}
        self.assigned_at = time.monotonic()  # the idle clock starts again at each assignment
        # Between a revocation and the next assignment the group is rebalancing: the
        # revoked partitions' landed offsets are committed by whoever gets them next
        # (``assign``), so an idle stop must wait for that assignment.
        self.rebalancing_since: float | None = None
        # The batch landing (or waiting to) per partition, on the lander thread(s): a
        # partition's next batch is submitted only once its previous one landed (``flush``),
        # so a partition's batches land in offset order.
        self.landing: dict[TopicPartition, Future] = {}
        self._lander = ThreadPoolExecutor(max_workers=LANDERS, thread_name_prefix="lake-lander")
        # The last poll's records read as blocks, on a reader thread while the consumer polls
        # again (pyarrow's JSON reader releases the GIL): (partition, records, the read) in
        # the order polled; added to their batches after the next poll, before anything else
        # of theirs (see ``take_poll``).
        self.pending: list[tuple[TopicPartition, list, Future]] = []
        self._readers = ThreadPoolExecutor(max_workers=1, thread_name_prefix="block-reader")

    # --- partition lifecycle

    def assign(self, tp: TopicPartition) -> None:
        """Recover the partition's files and resume right after what already landed.

        Runs inside the rebalance callback, which (in kafka-python 3) must not block on
        the network: ``seek`` only sets the position, and the commit of the landed offset
        (if the group's offset lags behind the lake) is left to the main loop.
        """
        info = recover_partition(self.layout, tp.topic, tp.partition)
        contract = contract_for_topic(tp.topic, self.topics_by_contract)
        self.batches[tp] = PartitionBatch(tp.topic, tp.partition, contract, self.settings.ingest)
        self.assigned_at = time.monotonic()
        landed = info["landed_end"]
        if landed is not None:
            # Offsets are committed only after landing, so the committed offset is never
            # past landed + 1: resuming there skips exactly what is already in the lake.
            self.consumer.seek(tp, landed + 1)
            self.pending_commits[tp] = landed + 1
        log.info("assigned %s: %s", tp, info)

    def revoke(self, tp: TopicPartition) -> None:
        """Land the open batch before the partition moves (no commit here: see ``assign``)."""
        self.drain(tp, commit=False)
        self.flush(tp, bounded=False)
        self.reap(wait_for=[tp])
        self.batches.pop(tp, None)
        self.pending_commits.pop(tp, None)
        self.committed.pop(tp, None)

    def lose(self, tp: TopicPartition) -> None:
        """The group evicted us: another member may own it already, so land nothing more (a
        batch already landing is let finish, as it would have before the poll that told us)."""
        self.pending = [p for p in self.pending if p[0] != tp]  # read again by the new owner, as an open batch
        self.reap(wait_for=[tp])
        self.opened_at.pop(tp, None)
        self.batches.pop(tp, None)
        self.pending_commits.pop(tp, None)
        self.committed.pop(tp, None)

    # --- the hot path

    def take_poll(self, records: dict[TopicPartition, list]) -> None:
        """A poll's records: each partition's, if read as a block, starts being read on the
        reader thread and is added to its batch after the next poll (``pending``); the
        others are added now, after what the partition has pending. So a partition's records
        are added in offset order, and the block of poll k is read while poll k+1 fetches.
        An empty poll adds what is pending."""
        older, self.pending = self.pending, []
        now = []
        for tp, messages in records.items():
            batch = self.batches.get(tp)
            if batch is None:  # not ours any more (revoked between fetch and handle)
                continue
            if batch.reads_as_block(messages):
                self.pending.append((tp, messages, self._readers.submit(batch.read_block, messages)))
            else:
                now.append((tp, messages, None))
        for tp, messages, read in older + now:
            self.handle(tp, messages, read)

    def drain(self, tp: TopicPartition | None = None, commit: bool = True) -> None:
        """Add what is pending (of ``tp``, or of every partition) to its batch now."""
        todo = [p for p in self.pending if tp is None or p[0] == tp]
        self.pending = [p for p in self.pending if not (tp is None or p[0] == tp)]
        for p, messages, read in todo:
            self.handle(p, messages, read, commit=commit)

    def handle(self, tp: TopicPartition, messages: list, read: Future | None = None, commit: bool = True) -> None:
        """Add a poll's records of ``tp`` to its batch (``read``: their block, read ahead;
        None: per event), landing each batch that fills up."""
        batch = self.batches.get(tp)
        if batch is None:  # not ours any more (revoked between fetch and handle)
            return
        parts = read.result() if read is not None else None
        i, n = 0, len(messages)
        while i < n:
            i = batch.add_records(messages, i, parts, blocks=False)
            if batch.full():
                self.flush(tp)
                if commit:
                    self.commit()
        if len(batch) and tp not in self.opened_at:
            self.opened_at[tp] = time.monotonic()

    def flush_aged(self, now: float) -> bool:
        """Land every open batch whose first record arrived ``max_batch_age_s`` ago or more;
        True if one landed (its offsets then wait in ``pending_commits``). Closing a batch
        early is what the idle flush does too: exactly-once rests on the manifests and on
        resuming after what landed, not on where a batch closes."""
        limit = self.settings.ingest.max_batch_age_s
        aged = [tp for tp, t in self.opened_at.items() if now - t >= limit]
        for tp in aged:
            self.flush(tp)
        return bool(aged)

    def flush(self, tp: TopicPartition, bounded: bool = True) -> None:
        """Close the partition's open batch and start landing it (steps 1-3 of the commit
        protocol, on the lander thread); ``reap`` then makes its offsets pending commits.
        ``bounded``: first wait until fewer than ``MAX_LANDING`` batches are landing."""
        self.opened_at.pop(tp, None)
        batch = self.batches.get(tp)
        if batch is None or not len(batch):
            return
        self.reap(wait_for=[tp])  # the partition's previous batch first (in order, and one at a time)
        while bounded and len(self.landing) >= MAX_LANDING:
            wait(list(self.landing.values()), return_when=FIRST_COMPLETED)
            self.reap()
        self.landing[tp] = self._lander.submit(self._land, batch.take())

    def _land(self, batch: PartitionBatch) -> tuple[int, dict, int]:
        """On the lander thread: write, fsync, manifest, rename. Returns the offset to
        commit, the batch's counts and its number of files."""
        crash_point("before_manifest")
        br, moves, counts = batch.write_temp_files(self.layout)
        manifest = write_manifest(self.layout, br, moves, counts)
        crash_point("before_rename")
        roll_forward(self.layout, manifest)
        crash_point("after_rename")
        return br.last + 1, counts, len(moves)

    def reap(self, wait_for: Iterable[TopicPartition] = ()) -> int:
        """Take in the landings that finished, after waiting for those of ``wait_for``: their
        offsets become pending commits. A landing's error is raised here, in the consumer's
        thread. Returns how many landed."""
        waited = [self.landing[tp] for tp in wait_for if tp in self.landing]
        if waited:
            wait(waited)
        landed = 0
        for tp, fut in list(self.landing.items()):
            if not fut.done():
                continue
            del self.landing[tp]
            next_offset, counts, files = fut.result()
            landed += 1
            self.pending_commits[tp] = next_offset
            s = self.stats.setdefault(tp.topic, {"consumed": 0, "valid": 0, "dead_lettered": 0, "files": 0,
                                                 "batches": 0})
            s["consumed"] += counts["records"]
            s["valid"] += counts["valid"]
            s["dead_lettered"] += counts["dead_lettered"]
            s["files"] += files
            s["batches"] += 1
        return landed

    def flush_all(self) -> None:
        """Land every open batch (with what is pending), and wait until every batch landed."""
        self.drain()
        # Partitions with no batch landing first: ``flush`` waits for a partition's landing
        # batch before it hands it the next, so they start landing without that wait.
        for tp in sorted(self.batches, key=lambda tp: tp in self.landing):
            self.flush(tp, bounded=False)
        self.reap(wait_for=list(self.landing))

    def close(self) -> None:
        """Wait for the lander (a landing in flight completes: nothing writes to the lake after)."""
        self._readers.shutdown(wait=True)
        self._lander.shutdown(wait=True)

    def commit(self, timeout_ms: int = COMMIT_TIMEOUT_MS) -> bool:
        """Step 4. A failed commit is retried later: the manifests already protect the data."""
        self.reap()
        if not self.pending_commits:
            return True
        from kafka.structs import OffsetAndMetadata

        offsets = {tp: OffsetAndMetadata(off, "", -1) for tp, off in self.pending_commits.items()}
        try:
            self.consumer.commit(offsets, timeout_ms=timeout_ms)
        except KafkaError as exc:
            log.warning("offset commit failed (will retry; landed data is safe): %s", exc)
            return False
        for tp, off in offsets.items():
            self.committed[tp] = off.offset
            if self.pending_commits.get(tp) == off.offset:
                del self.pending_commits[tp]
        return True

    def settle(self) -> None:
        """After the open batches landed: commit each partition up to the consumer's
        position, which is past the offsets that hold no record the consumer sees
        (transaction markers, aborted records), not only past the last landed record.

        Safe only when every record a poll returned is in a batch that landed: call it
        after ``flush_all`` following a poll that completed (never an interrupted one).
        """
        deadline = time.monotonic() + 1.0  # a known position is local; an unknown one is not worth waiting for
        waiting = {p[0] for p in self.pending}
        for tp, batch in self.batches.items():
            if len(batch) or tp in self.landing or tp in waiting:
                continue
            try:
                position = self.consumer.position(tp, timeout_ms=max(0, int((deadline - time.monotonic()) * 1000)))
            except KafkaError:
                continue
            if position is None:
                continue
            done = max(self.pending_commits.get(tp, -1), self.committed.get(tp, -1))
            if position > done:
                self.pending_commits[tp] = position


class _Listener(ConsumerRebalanceListener):
    def __init__(self, sink: LakeSink):
        self.sink = sink

    def on_partitions_revoked(self, revoked):
        if revoked:
            self.sink.rebalancing_since = time.monotonic()
        for tp in revoked:
            if tp in self.sink.batches:
                self.sink.revoke(tp)

    def on_partitions_assigned(self, assigned):
        self.sink.rebalancing_since = None
        self.sink.assigned_at = time.monotonic()
        for tp in assigned:
            self.sink.assign(tp)

    def on_partitions_lost(self, lost):
        for tp in lost:
            self.sink.lose(tp)


def consumer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """The sink's kafka-python consumer settings (``skewless bench ingest`` gives its raw
    consumer the same, so the two compare on equal terms)."""
    cfg = dict(
        **settings.kafka.client_config(),
        group_id=settings.kafka.consumer_group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=settings.ingest.max_poll_records,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=settings.ingest.partition_fetch_bytes,
        max_poll_interval_ms=600_000,
        session_timeout_ms=10_000,
        heartbeat_interval_ms=3_000,
        isolation_level="read_committed",
        # Topics are never auto-created by a metadata request (they would get the broker's
        # partition count): ``_subscribe`` creates the missing ones with the configured count.
        allow_auto_create_topics=False,
    )
    cfg.update(overrides)
    return cfg


def make_consumer(settings: Settings, **overrides: Any) -> KafkaConsumer:
    cfg = consumer_config(settings, **overrides)
    try:
        consumer = KafkaConsumer(**cfg)
    except KafkaError as exc:
        raise ServiceError(
            f"no Kafka broker answers at {','.join(settings.kafka.bootstrap_servers)}",
            "start one with: skewless services up",
        ) from exc
    # kafka-python 3.0.12 does not hand ``allow_auto_create_topics`` to its metadata object
    # (which then asks the broker to create every topic it requests metadata for): set it there.
    cluster_config = getattr(getattr(consumer, "_cluster", None), "config", None)
    if isinstance(cluster_config, dict) and "allow_auto_create_topics" in cluster_config:
        cluster_config["allow_auto_create_topics"] = cfg["allow_auto_create_topics"]
    return consumer


def _topic_metadata(consumer: KafkaConsumer, timeout_ms: int = METADATA_TIMEOUT_MS) -> set[str]:
    """The existing topics among those the consumer is subscribed to, from a metadata request
    for those topics alone (``KafkaConsumer.topics()`` asks for every topic of the cluster:
    ~0.2 s on a broker holding a thousand). kafka-python has no public call for it, so this
    uses its client's cluster object, and falls back to ``topics()`` where that is not there."""
    cluster, net, manager = (getattr(consumer, a, None) for a in ("_cluster", "_net", "_manager"))
    if (net is None or not hasattr(manager, "wait_for") or not hasattr(cluster, "request_update")
            or getattr(cluster, "metadata_refresh_in_progress", None) is None):
        return consumer.topics()

    def refresh() -> None:
        try:
            net.run(manager.wait_for, cluster.request_update(), timeout_ms)
        except (UnknownTopicOrPartitionError, LeaderNotAvailableError):
            pass  # about one topic asked alone: the metadata was still updated (the topic is not in it)

    if cluster.metadata_refresh_in_progress:  # a request built before the subscription: wait, then ask again
        refresh()
    refresh()
    return cluster.topics()


def _subscribe(settings: Settings, consumer: KafkaConsumer, topics: list[str], listener: ConsumerRebalanceListener) -> None:
    """Subscribe with the topics' metadata known before the first join, creating the missing ones.

    A topic created mid-run (say, predictions on the API's first answer) would force a
    rebalance; creating them all first keeps the first assignment stable. And the metadata
    is fetched once subscribed, before the first join: kafka-python 3.0.12's group leader
    compares the partitions it assigned with a metadata snapshot that is only rebuilt on a
    metadata update; joining on a stale (empty) snapshot forces a second rebalance as soon
    as metadata arrives, and when a poll's timeout ends during that rebalance the client
    never completes it (it then waits forever with no partitions fetchable).
    """
    consumer.subscribe(topics, listener=listener)
    try:
        missing = [t for t in topics if t not in _topic_metadata(consumer)]
        if missing:
            ensure_topics(settings, missing)
            _topic_metadata(consumer)
    except KafkaError as exc:
        raise ServiceError(f"no metadata for Kafka topics {topics} from "
                           f"{','.join(settings.kafka.bootstrap_servers)}: {exc}",
                           "check the broker with: skewless services status") from exc


class _Stop(BaseException):
    """Raised by the signal handler out of a wait on Kafka (a BaseException, so no
    ``except Exception`` inside the client swallows it)."""


class _Signals:
    """SIGTERM/SIGINT: the first asks the loop to stop and, if the loop is waiting on
    Kafka at that moment, interrupts the wait (a poll can keep the client busy for as
    long as the broker is away); a second one exits at once."""

    def __init__(self) -> None:
        self.stopping = False
        self._waiting = False

    def __call__(self, signum, frame) -> None:  # noqa: ARG002
        if self.stopping:
            log.warning("second signal: exiting now (landed batches are safe; the open one is read again next run)")
            os._exit(128 + signum)
        self.stopping = True
        if self._waiting:
            raise _Stop()

    @contextmanager
    def waiting_on_kafka(self) -> Iterator[None]:
        self._waiting = True
        try:
            if self.stopping:
                raise _Stop()
            yield
        finally:
            self._waiting = False


def _failing_batch(consumer: KafkaConsumer) -> tuple[TopicPartition | None, int | None]:
    """The partition and offset of the batch a poll failed on, when the client knows it.

    kafka-python keeps the batch it was reading as the fetcher's next records; that is a
    private attribute, so anything unexpected gives (None, None): the message then names
    no partition, but is still given.
    """
    part = getattr(getattr(consumer, "_fetcher", None), "_next_partition_records", None)
    tp = getattr(part, "topic_partition", None)
    offset = getattr(part, "next_fetch_offset", None)
    if not isinstance(tp, TopicPartition) or not isinstance(offset, int):
        return None, None
    return tp, offset


def halted(exc: BaseException, tp: TopicPartition | None = None, offset: int | None = None) -> ConsumeHalted:
    """One clear error for a poll failure that retrying cannot fix: what, where, what to do."""
    where = f" at topic {tp.topic} partition {tp.partition} offset {offset}" if tp is not None else ""
    then = "batches landed before it are committed; the next run resumes at it"
    text = str(exc) if isinstance(exc, KafkaError) else f"{type(exc).__name__}: {exc}"
    if isinstance(exc, UnsupportedCodecError):
        codec = next((c for c in CODEC_PACKAGES if f" {c} " in f" {exc} "), None)
        if codec is not None:
            what = f"cannot read a {codec}-compressed batch{where}: no {codec} library is installed"
            todo = f"install it with `pip install {CODEC_PACKAGES[codec]}` (skewless depends on it), then consume again"
        else:
            what = f"cannot read a batch{where}: {text}"
            todo = "the producer used a codec Kafka does not define; produce with none, gzip, snappy, lz4 or zstd"
    elif isinstance(exc, CorruptRecordError):
        what = f"a corrupt batch{where}: {text}"
        todo = ("nothing after it in this partition lands until it reads; check the broker's log segment "
                "(kafka-dump-log.sh --deep-iteration) and the disk")
    else:
        what = f"Kafka gave an error retrying cannot fix{where}: {text}"
        todo = "fix its cause, then consume again"
    return ConsumeHalted(f"ingest consume stopped: {what}", f"{todo}; {then}")


def _all_fetched(consumer: KafkaConsumer) -> bool:
    """True once partitions are assigned and each has had a fetch answered (its high
    watermark is known): before that, silence says nothing about the partition (on a
    busy broker the first fetch can take longer than ``until_idle``)."""
    assigned = consumer.assignment()
    return bool(assigned) and all(consumer.highwater(tp) is not None for tp in assigned)


def _warn_retrying(retries: dict[str, Any], exc: KafkaError) -> None:
    """A retriable poll failure: warn on the first, then at most every RETRY_WARN_EVERY_S."""
    retries["count"] += 1
    now = time.monotonic()
    if retries["warned_at"] is None or now - retries["warned_at"] >= RETRY_WARN_EVERY_S:
        retries["warned_at"] = now
        log.warning("poll failed (%d so far), retrying: %s", retries["count"], exc)


def consume(
    settings: Settings,
    until_idle: float | None = None,
    topics: list[str] | None = None,
    on_progress: Callable[[dict], None] | None = None,
    max_seconds: float | None = None,
    max_messages: int | None = None,
) -> dict[str, Any]:
    """Land Kafka topics into the lake until SIGTERM/SIGINT, ``until_idle`` seconds of
    silence, ``max_seconds`` or ``max_messages`` (then: flush, commit, return)."""
    topics = topics or list(settings.topics.by_contract().values())
    # No warm-up of the batch checks' pandera schema: rows read as blocks never need it
    # (``event_checks.block_failures``), so a backlog does not pay its ~0.2-0.3 s of CPU at
    # start, holding the GIL the first polls need; a batch with per-event rows pays it once,
    # on the lander thread.
    consumer = make_consumer(settings)
    sink = LakeSink(settings, consumer)
    try:
        _subscribe(settings, consumer, topics, _Listener(sink))
    except BaseException:
        sink.close()
        consumer.close(autocommit=False, timeout_ms=CLOSE_TIMEOUT_MS)
        raise

    signals = _Signals()
    in_main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, signals) for s in (signal.SIGTERM, signal.SIGINT)} if in_main else {}
    t0 = time.perf_counter()
    last_message = time.monotonic()
    idle_flushed = True
    received = 0
    settled = True  # False after a poll was interrupted: the position may be past records we never got
    fatal: ConsumeHalted | None = None
    final_commit_ok = False
    retries: dict[str, Any] = {"count": 0, "warned_at": None}
    try:
        while not signals.stopping:
            try:
                with signals.waiting_on_kafka():
                    records = consumer.poll(timeout_ms=250)
            except _Stop:
                settled = False
                break
            except KafkaError as exc:
                if not exc.retriable:  # a codec, a corrupt batch, an authorization: the same every time
                    fatal = halted(exc, *_failing_batch(consumer))
                    break
                _warn_retrying(retries, exc)  # broker restart, network blip: keep going
                time.sleep(0.5)
                continue
            except Exception as exc:  # noqa: BLE001 - the client failed in a way it does not classify
                fatal = halted(exc, *_failing_batch(consumer))
                break
            if retries["count"]:
                log.warning("Kafka answers again after %d failed polls", retries["count"])
                retries.update(count=0, warned_at=None)
            now = time.monotonic()
            last_message = max(last_message, sink.assigned_at)
            if records:
                last_message = now
                idle_flushed = False
                sink.take_poll(records)
                received += sum(len(messages) for messages in records.values())
                landed = sink.reap()  # batches that landed in the background since the last commit
                if sink.flush_aged(now) or landed:  # a steady trickle is never idle: bound the wait by age
                    sink.commit()
                if on_progress:
                    on_progress(sink.stats)
            else:
                sink.take_poll({})  # what the last poll left pending
                if sink.flush_aged(now) and on_progress:
                    on_progress(sink.stats)
                quiet = now - last_message >= min(1.0, until_idle or 1.0)
                if not idle_flushed and quiet:
                    # Quiet: land what is open so it is visible and committed.
                    sink.flush_all()
                    idle_flushed = True
                    if on_progress:
                        on_progress(sink.stats)
                if idle_flushed and quiet:
                    # Not before: right after an assignment the first polls are empty while the
                    # first fetch is in flight, and asking each partition's position (an offset
                    # reset's round trip) and committing it then only delays the first records.
                    sink.settle()
                try:
                    with signals.waiting_on_kafka():
                        sink.commit()
                except _Stop:
                    break
                if until_idle is not None and now - last_message >= until_idle and _all_fetched(consumer):
                    since = sink.rebalancing_since
                    if since is None:
                        break
                    if now - since >= REBALANCE_WAIT_S:
                        log.warning("the group has been rebalancing for %.0f s; stopping without the new "
                                    "assignment (landed data is safe; the next run commits its offsets)", now - since)
                        break
            if max_seconds is not None and time.perf_counter() - t0 >= max_seconds:
                break
            if max_messages is not None and received >= max_messages:
                break
        # Whatever ended the loop (a stop, idleness, an error that cannot be retried): land
        # what was received and commit it, within a bounded time.
        sink.flush_all()
        if settled and fatal is None:
            sink.settle()
        # A stop asked by a signal must be prompt; any other end (idle, a limit, an error)
        # waits as long as a normal commit may, so a busy broker or machine does not leave
        # the group's offsets behind the lake (harmless, the lake decides where a run
        # resumes, but `verify` would report lag).
        final_commit_ok = sink.commit(timeout_ms=CLOSE_TIMEOUT_MS if signals.stopping else 3 * COMMIT_TIMEOUT_MS)
    finally:
        sink.close()
        for s, h in previous.items():
            signal.signal(s, h)
        try:
            consumer.close(autocommit=False, timeout_ms=CLOSE_TIMEOUT_MS)
        except KafkaError:
            pass
    if fatal is not None:
        raise fatal
    elapsed = time.perf_counter() - t0
    consumed = sum(s["consumed"] for s in sink.stats.values())
    return {
        "topics": sink.stats,
        "consumed": consumed,
        "valid": sum(s["valid"] for s in sink.stats.values()),
        "dead_lettered": sum(s["dead_lettered"] for s in sink.stats.values()),
        "seconds": round(elapsed, 3),
        "events_per_s": round(consumed / elapsed, 1) if elapsed else None,
        "offsets_committed": final_commit_ok,
        "lake_path": settings.lake_path,
    }
