"""Contract evolution: v1 files (no `mcc`) and v2 files read together by Spark (mergeSchema)."""

from __future__ import annotations

import pytest

from ingestion.consumer import consume
from ingestion.producer import produce
from tests.integration.ingest_helpers import START


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[1]").appName("skewless-test-schema")
               .config("spark.driver.memory", "1g").config("spark.ui.enabled", "false")
               .config("spark.sql.shuffle.partitions", "2").config("spark.sql.session.timeZone", "UTC")
               .getOrCreate())
    yield session
    session.stop()


def test_v1_then_v2_events_are_both_readable_with_merged_schema(make_settings, spark):
    settings = make_settings()
    v1 = produce(settings, events=300, seed=21, start=START, days=1, schema_version=1)
    consume(settings, until_idle=2.0, topics=[settings.topics.transactions])
    v2 = produce(settings, events=300, seed=22, start=START, days=1, schema_version=2)
    consume(settings, until_idle=2.0, topics=[settings.topics.transactions])

    raw = f"{settings.lake_path}/raw/{settings.topics.transactions}"
    df = spark.read.option("mergeSchema", "true").parquet(raw)
    assert "mcc" in df.columns and "event_time" in df.columns
    rows = {r["transaction_id"]: r for r in df.select("transaction_id", "mcc", "schema_version").collect()}
    tx = settings.topics.transactions
    assert len(rows) == v1["topics"][tx]["valid"] + v2["topics"][tx]["valid"]
    v1_rows = [r for t, r in rows.items() if t.startswith("tx21-")]
    v2_rows = [r for t, r in rows.items() if t.startswith("tx22-")]
    assert v1_rows and all(r["mcc"] is None and r["schema_version"] == 1 for r in v1_rows)
    assert v2_rows and all(r["mcc"] is not None and r["schema_version"] == 2 for r in v2_rows)
    # Hive partitions by event time are visible to Spark as columns.
    assert {"date", "hour"} <= set(df.columns)
