"""The Kafka -> lake consumer on the happy path, against the real broker.

Produce seeded events (with some malformed ones) -> consume until idle -> the auditor and
a direct read of the lake agree that every event landed exactly once, in the date
directory of its own event time, and every bad one is a dead letter carrying its bytes
and the reason. Then: a second run lands nothing, and v1 + v2 files read together in Spark.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import timezone

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from ingestion.consumer import consume
from ingestion.producer import produce
from ingestion.simulator import bad_messages, simulate
from ingestion.verify import verify
from skewless.contracts import LABELS, TRANSACTIONS
from skewless.lake_layout import LakeLayout
from tests.integration.ingest_helpers import START, assert_exactly_once, dead_letters, isolated_settings

HIVE = ds.partitioning(pa.schema([("date", pa.string())]), flavor="hive")
EVENTS, SEED, DAYS, BAD = 3000, 101, 7, 0.08


def read_raw(settings, contract) -> pa.Table:
    root = LakeLayout.of(settings).raw_dir(getattr(settings.topics, contract.name))
    return ds.dataset(str(root), format="parquet", partitioning=HIVE).to_table()


def lake_files(settings) -> dict[str, float]:
    root = LakeLayout.of(settings).root
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def landed(services, tmp_path_factory):
    """One topic set produced (with bad messages) and consumed until idle, shared by the tests
    that only read the lake."""
    settings = isolated_settings(services, tmp_path_factory.mktemp("basics"), ingest={"flush_records": 400})
    produced = produce(settings, events=EVENTS, seed=SEED, bad_fraction=BAD, start=START, days=DAYS)
    summary = consume(settings, until_idle=2.0)
    return settings, produced, summary


def test_every_event_lands_once_and_the_bad_ones_are_dead_lettered(landed):
    settings, produced, summary = landed
    sim = simulate(EVENTS, SEED, START, DAYS)
    assert sim.labels, "days=7 should produce some chargeback labels"
    report = assert_exactly_once(settings, [produced], [t["transaction_id"] for t in sim.transactions])
    for topic, counts in produced["topics"].items():
        assert counts["bad"] > 0
        t = report["topics"][topic]
        assert t["valid"] + t["dead_lettered"] == counts["produced"]
        # The consumer's own summary agrees with the auditor.
        assert summary["topics"][topic]["consumed"] == counts["produced"]
        assert summary["topics"][topic]["valid"] == counts["valid"]
        assert summary["topics"][topic]["dead_lettered"] == counts["bad"]
        for part in t["partitions"].values():  # the group's offset is at the end of each partition
            assert part["committed"] == part["end_offset"]

    # Labels: each produced label exactly once too.
    labels = read_raw(settings, LABELS)
    assert sorted(labels.column("transaction_id").to_pylist()) == sorted(lb["transaction_id"] for lb in sim.labels)


@pytest.mark.parametrize("contract", [TRANSACTIONS, LABELS], ids=lambda c: c.name)
def test_rows_sit_in_the_date_directory_of_their_event_time_sorted_by_it(landed, contract):
    settings, _, _ = landed
    table = read_raw(settings, contract)
    assert table.num_rows > 0
    assert table.schema.field(contract.time_field).type == pa.timestamp("us", tz="UTC")
    for name in ("_kafka_partition", "_kafka_offset", "_ingested_at"):
        assert name in table.column_names and table.column(name).null_count == 0
    times = table.column(contract.time_field).to_pylist()
    dates = table.column("date").to_pylist()
    wrong = [(t, d) for t, d in zip(times, dates) if t.astimezone(timezone.utc).strftime("%Y-%m-%d") != d]
    assert not wrong, wrong[:5]
    # The simulated traffic spans the days it was asked for, so there are several date directories.
    assert len(set(dates)) > 1
    # File names hold topic, partition and offset range, and match the rows inside, which
    # are in event-time order (row-group statistics then prune by time within a date).
    topic = getattr(settings.topics, contract.name)
    for path in LakeLayout.of(settings).raw_dir(topic).rglob("*.parquet"):
        in_file = ds.dataset(str(path), format="parquet").to_table(columns=[contract.time_field]).column(0).to_pylist()
        assert in_file == sorted(in_file), path
        name_topic, part, rng = path.stem.split("+")
        first, last = (int(x) for x in rng.split("-"))
        rows = ds.dataset(str(path), format="parquet").to_table(columns=["_kafka_partition", "_kafka_offset"])
        assert name_topic == topic
        assert set(rows.column("_kafka_partition").to_pylist()) == {int(part)}
        assert first <= min(rows.column("_kafka_offset").to_pylist()) <= max(rows.column("_kafka_offset").to_pylist()) <= last


def _expected_reason(contract, raw: bytes) -> str:
    """A fragment the dead-letter reason must contain: the problem, and the field if there is one."""
    try:
        event = json.loads(raw)
    except ValueError:
        return "not valid JSON"
    if not isinstance(event, dict):
        return "expected a JSON object"
    missing = [f.name for f in contract.fields if f.required and f.name not in event]
    if missing:
        return f"missing required field '{missing[0]}'"
    if contract is TRANSACTIONS:
        return "field 'amount'"  # wrong type ("12.50") or out of range (-5, 1e12)
    return "field 'is_fraud'" if event["is_fraud"] == "yes" else "field 'label_time' is out of range"


@pytest.mark.parametrize("contract", [TRANSACTIONS, LABELS], ids=lambda c: c.name)
def test_dead_letters_carry_the_original_bytes_and_the_reason(landed, contract):
    settings, produced, _ = landed
    topic = getattr(settings.topics, contract.name)
    n_bad = produced["topics"][topic]["bad"]
    sent = [raw for _, raw in bad_messages(n_bad, SEED, contract.name)]
    dl = dead_letters(settings, contract.name)
    assert dl is not None and dl.num_rows == n_bad
    assert Counter(dl.column("value").to_pylist()) == Counter(sent)
    assert set(dl.column("topic").to_pylist()) == {topic}
    for row in dl.to_pylist():
        assert row["key"] is None  # the producer sent them without a key
        assert 0 <= row["partition"] < settings.kafka.partitions and row["offset"] >= 0
        assert row["kafka_timestamp_ms"] and row["_ingested_at"] is not None
        assert _expected_reason(contract, row["value"]) in row["reason"], row
    # The offsets of the dead letters are not in the valid rows, and vice versa.
    valid = read_raw(settings, contract)
    valid_keys = set(zip(valid.column("_kafka_partition").to_pylist(), valid.column("_kafka_offset").to_pylist()))
    assert not valid_keys & set(zip(dl.column("partition").to_pylist(), dl.column("offset").to_pylist()))


def test_consuming_again_lands_nothing_new(landed):
    settings, produced, _ = landed
    before = lake_files(settings)
    again = consume(settings, until_idle=1.5)
    assert again["consumed"] == 0 and again["valid"] == 0 and again["dead_lettered"] == 0
    assert lake_files(settings) == before  # same files, untouched
    report = verify(settings)
    assert report["ok"]
    for topic, counts in produced["topics"].items():
        assert report["topics"][topic]["landed"] == counts["produced"]


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[1]").appName("skewless-test-ingest-basics")
               .config("spark.driver.memory", "1g").config("spark.ui.enabled", "false")
               .config("spark.sql.shuffle.partitions", "2").config("spark.sql.session.timeZone", "UTC")
               .getOrCreate())
    yield session
    session.stop()


def test_schema_v1_then_v2_read_together_by_spark_with_merged_schema(make_settings, spark):
    settings = make_settings(ingest={"flush_records": 200})
    tx = settings.topics.transactions
    v1 = produce(settings, events=400, seed=201, start=START, days=1, schema_version=1)
    consume(settings, until_idle=1.5, topics=[tx])
    v2 = produce(settings, events=400, seed=202, start=START, days=1, schema_version=2)
    consume(settings, until_idle=1.5, topics=[tx])

    raw = LakeLayout.of(settings).raw_dir(tx)
    # Files of both versions exist: v1 files have no `mcc` column at all.
    with_mcc = {"mcc" in ds.dataset(str(p), format="parquet").schema.names for p in raw.rglob("*.parquet")}
    assert with_mcc == {True, False}

    df = spark.read.option("mergeSchema", "true").parquet(str(raw))
    assert {"mcc", "event_time", "transaction_id", "date"} <= set(df.columns)
    rows = df.select("transaction_id", "mcc", "schema_version", "event_time").collect()
    assert len(rows) == v1["topics"][tx]["valid"] + v2["topics"][tx]["valid"] == 800
    assert len({r["transaction_id"] for r in rows}) == 800
    v1_rows = [r for r in rows if r["transaction_id"].startswith("tx201-")]
    v2_rows = [r for r in rows if r["transaction_id"].startswith("tx202-")]
    assert len(v1_rows) == len(v2_rows) == 400
    assert all(r["mcc"] is None and r["schema_version"] == 1 for r in v1_rows)
    assert all(r["mcc"] is not None and r["schema_version"] == 2 for r in v2_rows)
    # The values are the ones produced.
    sim_v2 = {t["transaction_id"]: t["mcc"] for t in simulate(400, 202, START, 1, schema_version=2).transactions}
    assert {r["transaction_id"]: r["mcc"] for r in v2_rows} == sim_v2
    assert all(r["event_time"] is not None for r in rows)


def test_consume_creates_missing_topics_with_the_configured_partitions(make_settings):
    """The sink asks the broker only for its own topics' metadata and never lets a metadata
    request auto-create one (the broker's default here is 4 partitions): a missing topic is
    created with ``kafka.partitions``."""
    from kafka import KafkaConsumer

    settings = make_settings(partitions=2)
    topic = settings.topics.transactions
    summary = consume(settings, until_idle=1.0, topics=[topic])
    assert summary["consumed"] == 0
    probe = KafkaConsumer(**settings.kafka.client_config())
    try:
        assert probe.partitions_for_topic(topic) == {0, 1}
    finally:
        probe.close()
