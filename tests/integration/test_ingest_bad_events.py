"""Events that broke the parser or slipped past the contract, through the real consumer.

Each bad event is sent to a real broker between good ones; after ``consume`` every offset
is in the lake exactly once (a row or a dead letter with the contract's reason), the
auditor agrees with the broker, and a second run finds nothing left to land.
"""

from __future__ import annotations

import orjson
from kafka import KafkaProducer

from ingestion.consumer import consume
from ingestion.verify import verify
from skewless.topics import ensure_topics
from tests.integration.ingest_helpers import dead_letters, lake_table

GOOD = {"schema_version": 2, "transaction_id": "t0", "user_id": "u1", "merchant_id": "m1", "amount": 12.5,
        "currency": "EUR", "country": "DE", "channel": "web", "device_id": "d1",
        "event_time": "2026-03-01T10:00:00Z", "mcc": "5411"}


def tx(i: int, **changes) -> bytes:
    return orjson.dumps({**GOOD, "transaction_id": f"t{i}", **changes})


# (key, value, the dead letter's reason, or None for an event that lands as a row)
MESSAGES = [
    (b"u1", tx(1), None),
    (b"u1", tx(2, event_time="9999-12-31T23:59:59-23:59"), "field 'event_time' is out of range"),
    (b"u1", tx(3, event_time="0001-01-01T00:00:00+23:59"), "field 'event_time' is out of range"),
    (b"u1", tx(4), None),
    (b"   ", tx(5, user_id="   "), "field 'user_id' must not be blank"),
    (b"u1", tx(6, merchant_id="m\x001"), "field 'merchant_id' must be printable text"),
    (b"u1", tx(7, amount=1e-300), "field 'amount' is out of range [0.01, 1e+06]"),
    (b"u1", tx(8, padding="x" * 200_000), "unknown field 'padding'"),
    (b"u1", tx(9)[:-1] + b" " * 200_000 + b"}", "over the transactions contract's limit of 65,536"),
    (b"u2", tx(10), "message key 'u2' is not the event's user_id 'u1'"),
    (None, tx(11), None),  # no key: accepted (Kafka's console producer sends none)
    (b"u1", tx(12).replace(b'"m1"', b'"m\\ud800"'), "not valid JSON"),  # a lone surrogate
    (b"u1", b"\x00\xff garbage", "not valid JSON"),
    (b"u1", tx(13), None),
]


def test_bad_events_are_dead_lettered_with_their_reason_and_every_offset_lands(make_settings):
    settings = make_settings(partitions=1, ingest={"flush_records": 5})  # several batches
    topic = settings.topics.transactions
    ensure_topics(settings, [topic])
    producer = KafkaProducer(**settings.kafka.client_config(), acks="all")
    try:
        for key, value, _ in MESSAGES:
            producer.send(topic, key=key, value=value, partition=0)
        producer.flush(timeout=60)
    finally:
        producer.close()

    summary = consume(settings, until_idle=1.5, topics=[topic])
    good = [i for i, (_, _, reason) in enumerate(MESSAGES) if reason is None]
    assert (summary["consumed"], summary["valid"], summary["dead_lettered"]) == \
        (len(MESSAGES), len(good), len(MESSAGES) - len(good))

    rows = lake_table(settings).to_pylist()
    assert sorted(r["_kafka_offset"] for r in rows) == good
    assert sorted(r["transaction_id"] for r in rows) == sorted(["t1", "t4", "t11", "t13"])
    dead = {r["offset"]: r for r in dead_letters(settings).to_pylist()}
    assert sorted(dead) == [i for i in range(len(MESSAGES)) if i not in good]
    for offset, row in dead.items():
        key, value, reason = MESSAGES[offset]
        assert reason in row["reason"], (offset, row["reason"])
        assert (row["key"], row["value"]) == (key, value)  # the message as sent, for a replay

    report = verify(settings, topics=[topic])
    assert report["ok"], report
    # Nothing is left behind for a second run: every offset was landed and committed.
    assert consume(settings, until_idle=1.0, topics=[topic])["consumed"] == 0
