"""Exactly once into the lake, against the real Kafka broker, through crashes and rebalances.

After every fault the auditor (`ingestion.verify`) must find each offset exactly once
(valid row or dead letter), and every produced transaction id exactly once in the lake.
"""

from __future__ import annotations

import random
import signal
import time
from collections import Counter

import pytest

from ingestion.producer import produce
from ingestion.verify import verify
from tests.integration.ingest_helpers import (
    START, consumer_process, dead_letters, kill9, lake_table, landed_files, run_consumer, temp_files, wait_for,
)


def assert_exactly_once(settings, produced: dict) -> None:
    report = verify(settings)
    tx_topic = settings.topics.transactions
    assert report["ok"], report
    for topic, counts in produced["topics"].items():
        t = report["topics"][topic]
        assert t["duplicates"] == 0 and t["gaps"] == 0
        assert t["valid"] == counts["valid"], (topic, t, counts)
        assert t["dead_lettered"] == counts["bad"], (topic, t, counts)
    ids = lake_table(settings).column("transaction_id").to_pylist()
    assert len(ids) == produced["topics"][tx_topic]["valid"]
    assert not [i for i, c in Counter(ids).items() if c > 1]
    assert temp_files(settings) == []


@pytest.mark.parametrize("point", ["before_manifest", "before_rename", "after_rename"])
def test_kill9_at_each_commit_step_then_restart(make_settings, settings_file, point):
    settings = make_settings(ingest={"flush_records": 300})
    cfg = settings_file(settings)
    produced = produce(settings, events=3000, seed=11, bad_fraction=0.02, start=START, days=2)

    crashed = run_consumer(cfg, env={"SKEWLESS_INGEST_CRASH_AT": f"{point}:3"})
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    if point == "before_manifest":
        assert temp_files(settings) == []  # died before writing this batch's files
    elif point == "before_rename":
        assert temp_files(settings), "the manifest's temp files should still be there"

    done = run_consumer(cfg)
    assert done.returncode == 0, done.stderr[-2000:]
    assert_exactly_once(settings, produced)


def test_repeated_external_kill9_while_landing_a_backlog(make_settings, settings_file):
    settings = make_settings(ingest={"flush_records": 1500})
    cfg = settings_file(settings)
    produced = produce(settings, events=30000, seed=12, bad_fraction=0.01, start=START, days=3)
    rng = random.Random(5)
    for attempt in range(3):
        before = landed_files(settings)
        p = consumer_process(cfg, until_idle=30)
        # Let it land something, then kill it at an arbitrary moment.
        assert wait_for(lambda: landed_files(settings) > before or p.poll() is not None, timeout=120)
        time.sleep(rng.uniform(0.0, 0.5))
        if p.poll() is None:
            kill9(p)
    done = run_consumer(cfg)
    assert done.returncode == 0, done.stderr[-2000:]
    assert_exactly_once(settings, produced)


def test_two_consumers_in_one_group_with_a_rebalance(make_settings, settings_file):
    settings = make_settings(ingest={"flush_records": 1000})
    cfg = settings_file(settings)
    produced = produce(settings, events=30000, seed=13, bad_fraction=0.01, start=START, days=3)
    first = consumer_process(cfg, until_idle=8)
    assert wait_for(lambda: landed_files(settings) > 0, timeout=120)
    second = consumer_process(cfg, until_idle=8)  # joins: partitions are revoked and re-assigned
    time.sleep(2.0)
    first.send_signal(signal.SIGTERM)  # leaves: another rebalance, the second takes over
    assert first.wait(timeout=120) == 0, first.stderr.read()[-2000:]
    assert second.wait(timeout=300) == 0, second.stderr.read()[-2000:]
    assert_exactly_once(settings, produced)


def test_poison_messages_are_dead_lettered_and_the_stream_goes_on(make_settings, settings_file):
    from kafka import KafkaProducer

    settings = make_settings()
    cfg = settings_file(settings)
    topic = settings.topics.transactions
    good = produce(settings, events=200, seed=14, start=START, days=1)
    p = KafkaProducer(**settings.kafka.client_config())
    poison = [b"", b"\xff\xfe not utf8", b"{\"amount\": 1", b"null", b'{"transaction_id": 5}']
    for value in poison:
        p.send(topic, value=value, key=b"poison")
    p.flush()
    p.close()
    more = produce(settings, events=200, seed=15, start=START, days=1)
    done = run_consumer(cfg)
    assert done.returncode == 0, done.stderr
    dl = dead_letters(settings)
    assert dl is not None
    values = dl.column("value").to_pylist()
    for v in poison:
        assert (v or None) in values or v in values
    reasons = dl.column("reason").to_pylist()
    assert any("not valid JSON" in r for r in reasons)
    assert any("empty message" in r for r in reasons)
    assert any("transaction_id" in r for r in reasons)
    ids = set(lake_table(settings).column("transaction_id").to_pylist())
    assert len(ids) == good["topics"][topic]["valid"] + more["topics"][topic]["valid"] - len(
        {f"tx15-{i:09d}" for i in range(200)} & {f"tx14-{i:09d}" for i in range(200)})
    report = verify(settings)
    assert report["ok"] and report["topics"][topic]["landed"] == 400 + len(poison)


def test_broker_restart_while_consuming_loses_nothing(services, make_settings, settings_file):
    from skewless.services import kafka as kafka_service

    settings = make_settings(ingest={"flush_records": 1000})
    cfg = settings_file(settings)
    first = produce(settings, events=5000, seed=16, start=START, days=1)
    p = consumer_process(cfg, until_idle=25)
    try:
        assert wait_for(lambda: landed_files(settings) > 0, timeout=120)
        kafka_service.down(services)
        time.sleep(2)
    finally:
        kafka_service.up(services)
    second = produce(settings, events=5000, seed=17, start=START, days=1)
    assert p.wait(timeout=300) == 0, p.stderr.read()[-3000:]
    report = verify(settings)
    tx = settings.topics.transactions
    assert report["ok"], report
    assert report["topics"][tx]["valid"] == first["topics"][tx]["valid"] + second["topics"][tx]["valid"]
