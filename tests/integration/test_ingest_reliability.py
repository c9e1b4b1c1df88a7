"""Exactly once into the lake through crashes, rebalances, a broker restart and poison.

Every test runs the real consumer against the real broker (the fault tests as a separate
`skewless ingest consume` process, so a kill -9 is a real one), and after the fault
checks with the auditor (`ingestion.verify`) and a direct read of the lake that every
offset landed exactly once (valid row or dead letter), the group's offsets caught up,
every produced transaction id is in the lake exactly once, and no temp file is left.
"""

from __future__ import annotations

import json
import random
import signal
import threading
import time

import orjson
import pytest
from kafka import KafkaProducer

from ingestion.consumer import consume
from ingestion.producer import produce
from ingestion.simulator import simulate
from skewless.topics import ensure_topics
from skewless.lake_layout import LakeLayout
from ingestion.verify import verify
from tests.integration.ingest_helpers import (
    START, assert_exactly_once, broker_settings, consumer_process, dead_letters, expected_transaction_ids, kill9,
    lake_table, manifest_count, run_consumer, summary_of, temp_files, wait_for,
)


def landed_total(settings) -> int:
    """Offsets landed so far (valid + dead-lettered), over all topics, from the lake alone."""
    return sum(t["landed"] for t in verify(settings, check_kafka=False)["topics"].values())


def manifest_records(settings) -> int:
    """Offsets covered by the batches that landed (their manifests), whatever their files' state."""
    root = LakeLayout.of(settings).manifests_root
    return sum(json.loads(p.read_text())["records"] for p in root.rglob("*.json") if not p.name.startswith("."))


def tail(text: str | None) -> str:
    return (text or "")[-3000:]


# --- kill -9 inside the commit protocol (failpoints)


@pytest.mark.parametrize("point,nth", [("before_manifest", 3), ("before_rename", 4), ("after_rename", 5)])
def test_kill9_at_each_step_of_the_commit_protocol_then_restart(make_settings, settings_file, point, nth):
    settings = make_settings(ingest={"flush_records": 250})
    cfg = settings_file(settings)
    produced = produce(settings, events=2500, seed=301, bad_fraction=0.03, start=START, days=2)
    total = produced["produced"]

    crashed = run_consumer(cfg, until_idle=2, env={"SKEWLESS_INGEST_CRASH_AT": f"{point}:{nth}"}, timeout=120)
    assert crashed.returncode == -signal.SIGKILL, (crashed.returncode, tail(crashed.stderr))
    # It died in the middle: nth-1 batches landed before the fatal one.
    manifests = manifest_count(settings)
    assert manifests == (nth - 1 if point == "before_manifest" else nth)
    assert 0 < landed_total(settings) < total
    if point == "before_manifest":
        assert temp_files(settings) == []  # nothing of the fatal batch was written
    elif point == "before_rename":
        assert temp_files(settings), "the landed batch's files should still have their temp names"
    else:  # after the rename, before the offset commit: the lake is ahead of the group
        assert temp_files(settings) == []
        tx_parts = verify(settings)["topics"][settings.topics.transactions]["partitions"]
        behind = [p for p, e in tx_parts.items()
                  if e["last"] is not None and (e["committed"] or 0) <= e["last"]]
        assert behind, tx_parts

    landed_records = manifest_records(settings)
    done = run_consumer(cfg, until_idle=2, timeout=120)
    assert done.returncode == 0, tail(done.stderr)
    # The restart lands exactly what no manifest covered before it (a landed batch is rolled
    # forward, never rewritten).
    assert summary_of(done.stdout)["consumed"] == total - landed_records
    assert_exactly_once(settings, [produced], expected_transaction_ids(produced, 2500, 2))


# --- kill -9 from outside, at arbitrary moments, while a backlog is landing


def test_repeated_external_kill9_while_landing_a_backlog(make_settings, settings_file):
    settings = make_settings(ingest={"flush_records": 2000})
    cfg = settings_file(settings)
    produced = produce(settings, events=50_000, seed=302, bad_fraction=0.01, start=START, days=2)
    total = produced["produced"]
    rng = random.Random(302)
    landed_before = 0
    for attempt in range(3):
        before = manifest_count(settings)
        p = consumer_process(cfg, until_idle=30)
        # Kill once it has landed a random number (1-3) of further batches, plus a random delay:
        # sometimes between batches, sometimes in the middle of writing one.
        k = rng.randint(1, 3)
        assert wait_for(lambda: manifest_count(settings) >= before + k or p.poll() is not None,
                        timeout=120, interval=0.01)
        time.sleep(rng.uniform(0.0, 0.05))
        assert p.poll() is None, f"the consumer exited by itself: {tail(p.stderr.read())}"
        kill9(p)
        assert p.returncode == -signal.SIGKILL
        landed = landed_total(settings)
        assert landed_before < landed < total, (attempt, landed_before, landed, total)
        landed_before = landed
        # The auditor never sees a duplicate, even right after a kill.
        assert all(t["duplicates"] == 0 for t in verify(settings, check_kafka=False)["topics"].values())

    done = run_consumer(cfg, until_idle=2, timeout=180)
    assert done.returncode == 0, tail(done.stderr)
    assert summary_of(done.stdout)["consumed"] == total - landed_before
    assert_exactly_once(settings, [produced], expected_transaction_ids(produced, 50_000, 2))


# --- two consumers in one group, with rebalances in the middle


def test_two_consumers_in_one_group_with_rebalances(make_settings, settings_file):
    settings = make_settings(ingest={"flush_records": 500})
    cfg = settings_file(settings)
    first_batch = produce(settings, events=6000, seed=303, bad_fraction=0.01, start=START, days=2)

    later: dict = {}
    paced = threading.Thread(target=lambda: later.update(
        produce(settings, events=12_000, seed=304, bad_fraction=0.01, start=START, days=2, rate=2500)))
    a = consumer_process(cfg, until_idle=6)
    b = None
    try:
        assert wait_for(lambda: manifest_count(settings) > 0, timeout=120)
        paced.start()  # traffic keeps arriving while the group changes
        b = consumer_process(cfg, until_idle=6)  # joins: partitions are revoked and spread over two
        # Let the second member take its share, then make the first leave: another rebalance.
        time.sleep(4.0)
        assert a.poll() is None and b.poll() is None
        a.send_signal(signal.SIGTERM)
        out_a, err_a = a.communicate(timeout=120)
        assert a.returncode == 0, tail(err_a)
        paced.join(timeout=120)
        out_b, err_b = b.communicate(timeout=180)
        assert b.returncode == 0, tail(err_b)
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                kill9(p)
    sa, sb = summary_of(out_a), summary_of(out_b)
    assert sa["consumed"] > 0 and sb["consumed"] > 0, (sa, sb)
    total = first_batch["produced"] + later["produced"]
    # Every offset was landed by exactly one of the two members.
    assert sa["consumed"] + sb["consumed"] == total
    ids = expected_transaction_ids(first_batch, 6000, 2) + expected_transaction_ids(later, 12_000, 2)
    assert_exactly_once(settings, [first_batch, later], ids)


# --- the broker restarts while a consumer is consuming


def test_broker_restart_while_consuming_loses_nothing(services, make_settings, settings_file):
    from skewless.services import kafka as kafka_service

    settings = make_settings(ingest={"flush_records": 1000})
    cfg = settings_file(settings)
    broker = broker_settings(services)
    first = produce(settings, events=20_000, seed=305, bad_fraction=0.01, start=START, days=2)
    p = consumer_process(cfg, until_idle=120)  # stopped with SIGTERM below, not by idleness
    try:
        assert wait_for(lambda: manifest_count(settings) > 0, timeout=120)
        pid_before = kafka_service.status(broker)["pid"]
        try:
            assert kafka_service.down(broker)["stopped"]
            time.sleep(1.0)
            assert p.poll() is None, tail(p.stderr.read())  # the consumer rides out the outage
        finally:
            kafka_service.up(broker)  # always: others share this broker
        assert kafka_service.status(broker)["pid"] not in (None, pid_before)

        second = produce(settings, events=5000, seed=306, bad_fraction=0.01, start=START, days=2)
        total = first["produced"] + second["produced"]
        assert wait_for(lambda: landed_total(settings) >= total or p.poll() is not None, timeout=180)
        assert p.poll() is None, tail(p.stderr.read())
        p.send_signal(signal.SIGTERM)  # graceful: flush, commit, exit 0
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, tail(err)
    finally:
        if p.poll() is None:
            kill9(p)
    assert summary_of(out)["consumed"] == total
    ids = expected_transaction_ids(first, 20_000, 2) + expected_transaction_ids(second, 5000, 2)
    assert_exactly_once(settings, [first, second], ids)


# --- poison messages


GOOD = {"schema_version": 2, "transaction_id": "tx-poison", "user_id": "u1", "merchant_id": "m1", "amount": 12.5,
        "currency": "EUR", "country": "DE", "channel": "web", "device_id": "d1", "event_time": "2026-03-01T10:00:00Z"}

# (value sent, a fragment its dead-letter reason must contain)
POISON = [
    (b"", "empty message"),
    (None, "empty message"),  # a tombstone
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe\x00 binary garbage", "not valid JSON"),
    (b"[" * 5000, "not valid JSON"),  # nested too deep for the parser
    (b"null", "expected a JSON object"),
    (b"[1, 2, 3]", "expected a JSON object"),
    (b'"a string"', "expected a JSON object"),
    (orjson.dumps({**GOOD, "amount": "12.50"}), "field 'amount' must be a number"),
    (orjson.dumps({**GOOD, "amount": True}), "field 'amount' must be a number"),
    (orjson.dumps({**GOOD, "user_id": 7}), "field 'user_id' must be a string"),
    (orjson.dumps({**GOOD, "amount": -3.0}), "field 'amount' is out of range"),
    (orjson.dumps({**GOOD, "amount": 1e300}), "field 'amount' is out of range"),
    (orjson.dumps({**GOOD, "event_time": "1970-01-01T00:00:00Z"}), "field 'event_time' is out of range"),
    (orjson.dumps({**GOOD, "event_time": "9999-12-31T23:59:59Z"}), "field 'event_time' is out of range"),
    (orjson.dumps({**GOOD, "event_time": "2026-03-01T10:00:00"}), "field 'event_time' has no timezone"),
    (orjson.dumps({**GOOD, "event_time": "yesterday"}), "field 'event_time'"),
    (orjson.dumps({**GOOD, "currency": "euro"}), "field 'currency'"),
    (orjson.dumps({**GOOD, "user_id": "u" * 100_000}), "field 'user_id' must be a non-empty string"),
    (orjson.dumps({k: v for k, v in GOOD.items() if k != "transaction_id"}), "missing required field 'transaction_id'"),
    (orjson.dumps({**GOOD, "schema_version": 99}), "schema_version"),
]


def test_poison_messages_are_dead_lettered_and_the_stream_goes_on(make_settings):
    settings = make_settings(partitions=2, ingest={"flush_records": 100})
    topic = settings.topics.transactions
    ensure_topics(settings, [topic])
    sim = simulate(600, 307, START, 1)
    before, after = sim.transactions[:300], sim.transactions[300:]
    producer = KafkaProducer(**settings.kafka.client_config(), acks="all")
    try:
        for partition in (0, 1):
            # good, poison, good, in this order, in each partition
            for tx in before[partition::2]:
                producer.send(topic, key=tx["user_id"].encode(), value=orjson.dumps(tx), partition=partition)
            for value, _ in POISON:
                producer.send(topic, key=b"poison", value=value, partition=partition)
            for tx in after[partition::2]:
                producer.send(topic, key=tx["user_id"].encode(), value=orjson.dumps(tx), partition=partition)
        producer.flush(timeout=60)
    finally:
        producer.close()

    summary = consume(settings, until_idle=1.5, topics=[topic])
    assert summary["consumed"] == 2 * (300 + len(POISON))
    assert summary["dead_lettered"] == 2 * len(POISON)

    dl = dead_letters(settings)
    assert dl is not None and dl.num_rows == 2 * len(POISON)
    for partition in (0, 1):
        rows = sorted((r for r in dl.to_pylist() if r["partition"] == partition), key=lambda r: r["offset"])
        # Offsets 150.. hold the poison, in the order sent; each keeps its bytes and gets its reason.
        assert [r["offset"] for r in rows] == list(range(150, 150 + len(POISON)))
        for row, (value, reason) in zip(rows, POISON):
            assert row["value"] == value and row["key"] == b"poison"
            assert reason in row["reason"], (value[:60] if value else value, row["reason"])
            assert len(row["reason"]) < 500  # the reason is a line, not the 100 kB value

    # The good messages after the poison landed too (the stream went on), each exactly once.
    lake = lake_table(settings)
    ids = lake.column("transaction_id").to_pylist()
    assert sorted(ids) == sorted(t["transaction_id"] for t in sim.transactions)
    late = [o for o in lake.column("_kafka_offset").to_pylist() if o >= 150 + len(POISON)]
    assert len(late) == 300
    report = verify(settings, topics=[topic])
    assert report["ok"], report
    t = report["topics"][topic]
    assert (t["valid"], t["dead_lettered"], t["gaps"], t["duplicates"], t["lag"]) == (600, 2 * len(POISON), 0, 0, 0)
