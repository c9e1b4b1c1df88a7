"""One lake, three engines, one answer: Spark (the feature job's reader), DuckDB and
pyarrow.dataset read a topic's raw files — landed by the sink's own code, under two
contract versions, with a crashed batch's temp files lying about — and get the same rows,
the same columns (``mcc``, which only v2 files hold, included) and the same types
(``date`` a date), with the settings ``skewless.lake`` names."""

from __future__ import annotations


import duckdb
import orjson
import pyarrow as pa

from etl.batch import read_raw
from skewless.contracts import TRANSACTIONS
from skewless.lake import duckdb_source, read_events, topic_schema
from skewless.lake_layout import LakeLayout
from tests.integration.lake_fixtures import land_batch
from tests.integration.spark_fixtures import etl_settings, spark  # noqa: F401


def tx(tid: str, time: str, mcc: str | None = None) -> bytes:
    event = {"transaction_id": tid, "user_id": "u1", "merchant_id": "m1", "amount": 12.5, "currency": "EUR",
             "country": "DE", "channel": "web", "device_id": "d1", "event_time": time}
    if mcc:
        event.update(schema_version=2, mcc=mcc)
    return orjson.dumps(event)


def land_two_versions(settings) -> None:
    # v1 producer: no mcc column in its files; one date.
    land_batch(settings, "transactions", 0, 0, [tx("v1-a", "2026-05-01T05:10:00Z"), tx("v1-b", "2026-05-01T13:00:00Z"),
                                                b"not json"])  # a dead letter: never a row
    # v2 producer: mcc in some rows (null in the others of the same file), a second day.
    land_batch(settings, "transactions", 1, 0, [tx("v2-a", "2026-05-01T05:20:00Z", "5411"),
                                                tx("v2-b", "2026-05-02T23:59:59Z"),
                                                tx("v2-c", "2026-05-02T00:00:00Z", "5812")])
    # A batch that crashed before its manifest: temp files only, never rows.
    land_batch(settings, "transactions", 0, 3, [tx("lost", "2026-05-01T05:30:00Z", "9999")], commit=False)


def as_table(t: pa.Table) -> pa.Table:
    """Columns by name (engines order them differently), rows by Kafka position, nullability aside."""
    t = t.select(sorted(t.column_names)).sort_by([("_kafka_partition", "ascending"), ("_kafka_offset", "ascending")])
    return t.cast(pa.schema([f.with_nullable(True) for f in t.schema]))


def test_spark_duckdb_and_pyarrow_read_the_same_rows_columns_and_types(etl_settings, spark):
    land_two_versions(etl_settings)
    topic = etl_settings.topics.transactions
    assert any(p.name.startswith(".tmp-") for p in LakeLayout.of(etl_settings).raw_dir(topic).rglob("*"))

    by_spark = read_raw(spark, etl_settings, "transactions", None, None).toArrow()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    result = con.sql(f"SELECT * FROM {duckdb_source(etl_settings.lake_path, topic)}").arrow()
    by_duckdb = result.read_all() if hasattr(result, "read_all") else result  # a reader since DuckDB 1.4
    by_pyarrow = read_events(etl_settings.lake_path, topic, "event_time", contract=TRANSACTIONS)
    by_pyarrow_footers = read_events(etl_settings.lake_path, topic, "event_time")  # no contract: footers unified

    expected = as_table(by_pyarrow)
    assert set(expected.column_names) == set(topic_schema(TRANSACTIONS).names)
    assert expected.schema.field("date").type == pa.date32() and "hour" not in expected.column_names
    rows = {r["transaction_id"]: r for r in expected.to_pylist()}
    assert sorted(rows) == ["v1-a", "v1-b", "v2-a", "v2-b", "v2-c"]
    assert {t: (r["mcc"], str(r["date"])) for t, r in rows.items()} == {
        "v1-a": (None, "2026-05-01"), "v1-b": (None, "2026-05-01"), "v2-a": ("5411", "2026-05-01"),
        "v2-b": (None, "2026-05-02"), "v2-c": ("5812", "2026-05-02")}

    for name, table in (("spark", by_spark), ("duckdb", by_duckdb), ("pyarrow without contract", by_pyarrow_footers)):
        got = as_table(table)
        assert got.schema == expected.schema, f"{name} reads other columns or types:\n{got.schema}\n!=\n{expected.schema}"
        assert got.equals(expected), f"{name} reads other rows"
