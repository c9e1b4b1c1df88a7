"""The Kafka -> lake sink: a kafka-python consumer group that lands every event exactly once.

See ``ingestion.lake_files`` for the file layout and the commit protocol. Auto-commit is
off; offsets are committed only after a batch's files are renamed into place. On every
partition assignment the partition is recovered and the consumer seeks past what
already landed; on revocation open batches are flushed and committed first.

Runs until SIGTERM/SIGINT (flush, commit, exit) or, with ``until_idle``, until no
message arrived for that many seconds.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any, Callable

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from ingestion.batch import PartitionBatch
from skewless.contracts import contract_for_topic
from skewless.topics import ensure_topics
from ingestion.faults import crash_point
from ingestion.lake_files import LakeLayout, recover_partition, roll_forward, write_manifest
from skewless.errors import ServiceError
from skewless.settings import Settings

log = logging.getLogger(__name__)


class LakeSink:
    """Owns the open batches of the assigned partitions and lands them."""

    def __init__(self, settings: Settings, consumer: KafkaConsumer):
        self.settings = settings
        self.consumer = consumer
        self.layout = LakeLayout(settings.lake_path)
        self.topics_by_contract = settings.topics.by_contract()
        self.batches: dict[TopicPartition, PartitionBatch] = {}
        self.pending_commits: dict[TopicPartition, int] = {}
        self.stats: dict[str, dict[str, int]] = {}
        self.assigned_at = time.monotonic()  # the idle clock starts again at each assignment

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
        self.flush(tp)
        self.batches.pop(tp, None)
        self.pending_commits.pop(tp, None)

    def lose(self, tp: TopicPartition) -> None:
        """The group evicted us: another member may own it already, so land nothing."""
        self.batches.pop(tp, None)
        self.pending_commits.pop(tp, None)

    # --- the hot path

    def handle(self, tp: TopicPartition, messages: list) -> None:
        batch = self.batches.get(tp)
        if batch is None:  # not ours any more (revoked between fetch and handle)
            return
        add = batch.add
        for m in messages:
            if add(m.offset, m.key, m.value, m.timestamp):
                self.flush(tp)
                self.commit()

    def flush(self, tp: TopicPartition) -> None:
        """Land the partition's open batch (steps 1-3 of the commit protocol)."""
        batch = self.batches.get(tp)
        if batch is None or not len(batch):
            return
        crash_point("before_manifest")
        br, moves, counts = batch.write_temp_files(self.layout)
        manifest = write_manifest(self.layout, br, moves, counts)
        crash_point("before_rename")
        roll_forward(self.layout, manifest)
        crash_point("after_rename")
        self.pending_commits[tp] = br.last + 1
        s = self.stats.setdefault(tp.topic, {"consumed": 0, "valid": 0, "dead_lettered": 0, "files": 0, "batches": 0})
        s["consumed"] += counts["records"]
        s["valid"] += counts["valid"]
        s["dead_lettered"] += counts["dead_lettered"]
        s["files"] += len(moves)
        s["batches"] += 1
        batch.reset()

    def flush_all(self) -> None:
        for tp in list(self.batches):
            self.flush(tp)

    def commit(self) -> bool:
        """Step 4. A failed commit is retried later: the manifests already protect the data."""
        if not self.pending_commits:
            return True
        from kafka.structs import OffsetAndMetadata

        offsets = {tp: OffsetAndMetadata(off, "", -1) for tp, off in self.pending_commits.items()}
        try:
            self.consumer.commit(offsets)
        except KafkaError as exc:
            log.warning("offset commit failed (will retry; landed data is safe): %s", exc)
            return False
        self.pending_commits.clear()
        return True


class _Listener(ConsumerRebalanceListener):
    def __init__(self, sink: LakeSink):
        self.sink = sink

    def on_partitions_revoked(self, revoked):
        for tp in revoked:
            if tp in self.sink.batches:
                self.sink.revoke(tp)

    def on_partitions_assigned(self, assigned):
        for tp in assigned:
            self.sink.assign(tp)

    def on_partitions_lost(self, lost):
        for tp in lost:
            self.sink.lose(tp)


def make_consumer(settings: Settings, **overrides: Any) -> KafkaConsumer:
    cfg = dict(
        **settings.kafka.client_config(),
        group_id=settings.kafka.consumer_group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=settings.ingest.max_poll_records,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        max_poll_interval_ms=600_000,
        session_timeout_ms=10_000,
        heartbeat_interval_ms=3_000,
        isolation_level="read_committed",
    )
    cfg.update(overrides)
    try:
        return KafkaConsumer(**cfg)
    except KafkaError as exc:
        raise ServiceError(
            f"no Kafka broker answers at {','.join(settings.kafka.bootstrap_servers)}",
            "start one with: skewless services up",
        ) from exc


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
    # A topic created mid-run (say, predictions on the API's first answer) would force a
    # rebalance; creating them all first keeps the first assignment stable.
    ensure_topics(settings, topics)
    consumer = make_consumer(settings)
    sink = LakeSink(settings, consumer)
    consumer.subscribe(topics, listener=_Listener(sink))

    stopping = {"flag": False}

    def _stop(signum, frame):  # noqa: ARG001
        stopping["flag"] = True

    in_main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)} if in_main else {}
    t0 = time.perf_counter()
    last_message = time.monotonic()
    idle_flushed = True
    received = 0
    try:
        while not stopping["flag"]:
            try:
                records = consumer.poll(timeout_ms=250)
            except KafkaError as exc:  # broker restart, network blip: keep going
                log.warning("poll failed, retrying: %s", exc)
                time.sleep(0.5)
                continue
            now = time.monotonic()
            last_message = max(last_message, sink.assigned_at)
            if records:
                last_message = now
                idle_flushed = False
                for tp, messages in records.items():
                    sink.handle(tp, messages)
                    received += len(messages)
                if on_progress:
                    on_progress(sink.stats)
            else:
                if not idle_flushed and now - last_message >= min(1.0, until_idle or 1.0):
                    # Quiet: land what is open so it is visible and committed.
                    sink.flush_all()
                    idle_flushed = True
                    if on_progress:
                        on_progress(sink.stats)
                sink.commit()
                if until_idle is not None and now - last_message >= until_idle and consumer.assignment():
                    break
            if max_seconds is not None and time.perf_counter() - t0 >= max_seconds:
                break
            if max_messages is not None and received >= max_messages:
                break
        sink.flush_all()
        sink.commit()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        try:
            consumer.close(autocommit=False)
        except KafkaError:
            pass
    elapsed = time.perf_counter() - t0
    consumed = sum(s["consumed"] for s in sink.stats.values())
    return {
        "topics": sink.stats,
        "consumed": consumed,
        "valid": sum(s["valid"] for s in sink.stats.values()),
        "dead_lettered": sum(s["dead_lettered"] for s in sink.stats.values()),
        "seconds": round(elapsed, 3),
        "events_per_s": round(consumed / elapsed, 1) if elapsed else None,
        "lake_path": settings.lake_path,
    }
