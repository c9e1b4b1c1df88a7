"""Events that pass the contract but break a declared batch check (``skewless.event_checks``),
through the real broker and consumer: each is a dead letter whose reason names the check,
with its original bytes, and nothing is dropped (every offset is a row or a dead letter)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import orjson
from kafka import KafkaProducer

from ingestion.consumer import consume
from skewless.topics import ensure_topics
from tests.integration.ingest_helpers import dead_letters, lake_table

NOW = datetime.now(timezone.utc).replace(microsecond=0)
GOOD = {"schema_version": 2, "transaction_id": "t0", "user_id": "u1", "merchant_id": "m1", "amount": 12.5,
        "currency": "EUR", "country": "DE", "channel": "web", "device_id": "d1",
        "event_time": (NOW - timedelta(minutes=5)).isoformat()}


def tx(i: int, **changes) -> bytes:
    return orjson.dumps({**GOOD, "transaction_id": f"t{i}", **changes})


# (value, the check the dead letter's reason names, or None for a row)
MESSAGES = [
    (tx(1), None),
    (tx(2, channel="carrier-pigeon"), "check transactions.channel.allowed:"),
    (tx(3, event_time=(NOW + timedelta(days=2)).isoformat()), "check transactions.event_time.not_ahead_of_kafka:"),
    (tx(1), "check transactions.transaction_id.unique_in_batch:"),  # a second t1 in the batch
    (tx(4, amount=-3.0), "check transactions.amount.in_range:"),  # the contract's own, per event
    (tx(5), None),
]


def test_events_breaking_a_declared_check_are_dead_letters_named_by_the_check(make_settings):
    settings = make_settings(partitions=1)
    topic = settings.topics.transactions
    ensure_topics(settings, [topic])
    producer = KafkaProducer(**settings.kafka.client_config(), acks="all")
    try:
        for value, _ in MESSAGES:
            producer.send(topic, key=b"u1", value=value, partition=0, timestamp_ms=int(time.time() * 1000))
        producer.flush(timeout=60)
    finally:
        producer.close()

    summary = consume(settings, until_idle=1.5, topics=[topic])
    assert (summary["consumed"], summary["valid"], summary["dead_lettered"]) == (6, 2, 4)
    assert sorted(lake_table(settings).column("_kafka_offset").to_pylist()) == [0, 5]
    dead = {r["offset"]: r for r in dead_letters(settings).to_pylist()}
    assert sorted(dead) == [1, 2, 3, 4]
    for offset, row in dead.items():
        value, check = MESSAGES[offset]
        assert row["reason"].startswith(check), (offset, row["reason"])
        assert (row["key"], row["value"]) == (b"u1", value)
