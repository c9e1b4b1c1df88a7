"""Spark reads Kafka through its own Kafka source (spark-sql-kafka-0-10, its jars fetched
with mvn): a batch read (``spark.read``) and a streaming one (``readStream``, trigger
``availableNow``, ``foreachBatch``) give exactly the records a kafka-python producer sent to
the shared broker, with their partitions, offsets, keys, values and timestamps; a second
streaming run from the same checkpoint gives exactly the records sent since.

A session already running without the connector gets it (same session, not restarted),
checked in a process of its own (Spark keeps one JVM per process).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer

from skewless import spark_kafka
from skewless.errors import ServiceError
from skewless.settings import Settings
from skewless.topics import ensure_topics
from tests.isolation import isolated_settings, with_overrides

pytestmark = pytest.mark.integration

PARTITIONS = 2
BASE_TS = 1_767_225_600_000  # 2026-01-01T00:00:00Z, in ms
COLUMNS = ["partition", "offset", "CAST(key AS STRING) AS key", "CAST(value AS STRING) AS value",
           "unix_millis(timestamp) AS ts"]


def _produce(settings: Settings, ids: range) -> list[tuple]:
    """Record i goes to partition i % 2 with key user-<i % 3> and a JSON value; returns
    (partition, offset, key, value, timestamp ms) as the broker acknowledged each."""
    producer = KafkaProducer(**settings.kafka.client_config(), acks="all")
    try:
        sent = []
        for i in ids:
            value = {"id": i, "user_id": f"user-{i % 3}", "amount": round(10.5 * i, 2)}
            meta = producer.send(settings.topics.transactions, orjson.dumps(value), f"user-{i % 3}".encode(),
                                 partition=i % PARTITIONS, timestamp_ms=BASE_TS + i * 1000).get(timeout=30)
            sent.append((meta.partition, meta.offset, f"user-{i % 3}", value, BASE_TS + i * 1000))
        return sorted(sent, key=lambda r: r[:2])
    finally:
        producer.close()


def _rows(rows) -> list[tuple]:
    return sorted(((r.partition, r.offset, r.key, orjson.loads(r.value), r.ts) for r in rows), key=lambda r: r[:2])


@pytest.fixture
def fed(services, tmp_path) -> tuple[Settings, list[tuple]]:
    """A topic of its own with 2 partitions and 6 JSON records, 3 in each partition."""
    settings = isolated_settings(services, tmp_path, kafka={"partitions": PARTITIONS})
    ensure_topics(settings, [settings.topics.transactions])
    return settings, _produce(settings, range(6))


def _reader(reader, settings: Settings):
    return (reader.format("kafka")
            .option("kafka.bootstrap.servers", ",".join(settings.kafka.bootstrap_servers))
            .option("subscribe", settings.topics.transactions)
            .option("startingOffsets", "earliest"))


def test_batch_and_streaming_reads_give_exactly_what_was_sent(fed, tmp_path):
    from skewless.spark import spark_session

    settings, sent = fed
    # Each partition's records at offsets 0, 1, 2 of a new topic: what the reads must report.
    assert [(p, o) for p, o, *_ in sent] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    spark = spark_session(settings, kafka=True)

    batch = _reader(spark.read, settings).option("endingOffsets", "latest").load()
    assert _rows(batch.selectExpr(*COLUMNS).collect()) == sent

    # Streaming: at most 2 offsets per micro-batch, so the 6 records take several batches;
    # availableNow reads what is there when it starts, then the query stops by itself.
    batches: list[tuple[int, list[tuple]]] = []

    def run_stream() -> list[tuple[int, list[tuple]]]:
        start = len(batches)
        query = (_reader(spark.readStream, settings).option("maxOffsetsPerTrigger", 2).load()
                 .selectExpr(*COLUMNS).writeStream
                 .foreachBatch(lambda df, batch_id: batches.append((batch_id, _rows(df.collect()))))
                 .option("checkpointLocation", str(tmp_path / "checkpoint"))
                 .trigger(availableNow=True).start())
        query.awaitTermination()
        assert query.exception() is None
        return batches[start:]

    first = run_stream()
    assert len(first) > 1 and all(rows for _, rows in first)
    assert sorted((r for _, rows in first for r in rows), key=lambda r: r[:2]) == sent  # each record once

    # A second run from the same checkpoint: exactly the records sent since, at the next offsets.
    more = _produce(settings, range(6, 8))
    assert [(p, o) for p, o, *_ in more] == [(0, 3), (1, 3)]
    second = run_stream()
    assert sorted((r for _, rows in second for r in rows), key=lambda r: r[:2]) == more
    assert min(b for b, _ in second) > max(b for b, _ in first)


LATE = """
import sys
import orjson
from skewless.settings import load_settings
from skewless.spark import has_kafka_source, spark_session

settings = load_settings(sys.argv[1])
plain = spark_session(settings, "local[1]")
print("before", has_kafka_source(plain))
session = spark_session(settings, "local[1]", kafka=True)
print("same session", session is plain and not plain.sparkContext._jsc.sc().isStopped())
rows = (session.read.format("kafka").option("kafka.bootstrap.servers", ",".join(settings.kafka.bootstrap_servers))
        .option("subscribe", settings.topics.transactions).option("startingOffsets", "earliest").load()
        .selectExpr("partition", "offset", "CAST(value AS STRING) AS value").collect())
print(orjson.dumps(sorted([r.partition, r.offset, orjson.loads(r.value)] for r in rows)).decode())
"""


def test_a_session_running_without_the_connector_gets_it(fed, settings_file, tmp_path):
    settings, sent = fed
    done = subprocess.run([sys.executable, "-c", LATE, str(settings_file(settings))], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert lines[0] == "before False"
    assert lines[1] == "same session True"
    assert orjson.loads(lines[-1]) == [[p, o, value] for p, o, _, value, _ in sent]


def test_the_connector_jars_are_the_ones_pyspark_lacks(services, tmp_path):
    """A fetch into an empty cache (real mvn) keeps only the connector, its token provider,
    kafka-clients and commons-pool2, all matching the installed Spark."""
    settings = with_overrides(services, services={"jar_cache_dir": str(tmp_path / "cache")})
    version = spark_kafka.spark_version()
    jars = spark_kafka.kafka_connector_jars(settings)
    names = sorted(j.name for j in jars)
    assert [j.parent for j in jars] == [tmp_path / "cache" / f"spark-kafka-{version}"] * 4
    assert names[2:] == [f"spark-sql-kafka-0-10_2.13-{version}.jar",
                         f"spark-token-provider-kafka-0-10_2.13-{version}.jar"]
    assert names[0].startswith("commons-pool2-") and names[1].startswith("kafka-clients-")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"spark-kafka-{version}"]  # no temporary left
    assert spark_kafka.kafka_connector_jars(settings) == jars  # cached


def test_a_spark_version_whose_connector_does_not_resolve_is_named(services, tmp_path, monkeypatch):
    settings = with_overrides(services, services={"jar_cache_dir": str(tmp_path / "cache")})
    monkeypatch.setattr(spark_kafka, "spark_version", lambda: "0.0.0")  # never published
    with pytest.raises(ServiceError) as err:
        spark_kafka.kafka_connector_jars(settings)
    assert str(err.value) == ("Spark's Kafka connector org.apache.spark:spark-sql-kafka-0-10_2.13:0.0.0 (matching the "
                              "installed pyspark 0.0.0) does not resolve on Maven Central (pin pyspark to a version "
                              "whose connector resolves, as pyproject.toml does)")
    assert list((tmp_path / "cache").iterdir()) == []  # the temporary directory is gone
