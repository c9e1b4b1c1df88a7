"""An event counts once per business id: a producer retry lands one transaction (and one
label) at two offsets, and the feature job counts the copy landed first — in a full run
and in an incremental run that finds the copy in a later file than its original.

The lake is written by the sink's own code (``land_batch``), so ``_ingested_at`` and the
Kafka columns are what ingestion stamps."""

from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path

import orjson
import pandas as pd
import pytest

from etl.batch import run_batch
from etl.transforms import first_landed
from skewless.features.dsl import Aggregation as A
from skewless.features.dsl import Entity, EventSource, WindowedView
from skewless.lake_layout import LakeLayout
from tests.integration.lake_fixtures import land_batch
from tests.integration.spark_fixtures import etl_settings, spark  # noqa: F401

user, merchant = Entity("user", "user_id"), Entity("merchant", "merchant_id")
USER = WindowedView("dd_user", (user,), EventSource("transactions", "transactions", "event_time"), hop="1m",
                    aggregations=(A("count", "1h"), A("sum", "1h", "amount"),
                                  A("distinct_count", "1h", "merchant_id", name="merchants_1h")))
CHARGEBACKS = WindowedView(
    "dd_chargebacks", (merchant,),
    EventSource("chargebacks", "labels", "label_time", enrich=("transactions", "transaction_id", ("merchant_id",)),
                where="is_fraud"),
    hop="1h", aggregations=(A("count", "1d", name="chargebacks_1d"),))
VIEWS = (USER, CHARGEBACKS)


def tx(tid: str, minute: int, amount: float, merchant_id: str) -> bytes:
    return orjson.dumps({"transaction_id": tid, "user_id": "u1", "merchant_id": merchant_id, "amount": amount,
                         "currency": "EUR", "country": "DE", "channel": "web", "device_id": "d1",
                         "event_time": f"2026-05-01T10:{minute:02d}:00Z"})


def label(tid: str) -> bytes:
    return orjson.dumps({"transaction_id": tid, "is_fraud": True, "label_time": "2026-05-02T00:30:00Z"})


ORIGINALS = [tx("a", 0, 10.0, "m1"), tx("b", 10, 5.0, "m2"), tx("c", 20, 7.0, "m1")]
# Landed later, at lower offsets of a lower partition: "a" again as it was (a plain retry),
# "b" again with other content (what a copy after the first holds never counts).
COPIES = [tx("b", 10, 500.0, "m9"), tx("a", 0, 10.0, "m1")]


def land_originals(settings) -> None:
    land_batch(settings, "transactions", partition=1, first_offset=40, messages=ORIGINALS)
    land_batch(settings, "labels", partition=1, first_offset=8, messages=[label("b")])


def land_copies(settings) -> None:
    land_batch(settings, "transactions", partition=0, first_offset=3, messages=COPIES)
    land_batch(settings, "labels", partition=0, first_offset=2, messages=[label("b")])


def tables(settings) -> dict[str, pd.DataFrame]:
    out = {}
    for v in VIEWS:
        df = pd.read_parquet(LakeLayout.of(settings).features_dir(v.name)).drop(columns="date")
        out[v.name] = df.sort_values([*v.join_keys, "event_timestamp"]).reset_index(drop=True)
    return out


def at(df: pd.DataFrame, ts: str) -> pd.Series:
    rows = df[df.event_timestamp <= pd.Timestamp(ts)]
    return rows.iloc[-1]


def test_retried_events_count_once_in_incremental_and_full_runs(etl_settings):
    # Run 1 sees only the originals: what every later run must reproduce.
    land_originals(etl_settings)
    first = run_batch(etl_settings, views=VIEWS)
    assert first["duplicates_dropped"] == {"transactions": 0, "labels": 0}
    expected = tables(etl_settings)
    after_c = at(expected["dd_user"], "2026-05-01T10:21:00Z")
    assert (after_c["count_1h"], after_c["sum_amount_1h"], after_c["merchants_1h"]) == (3, 22.0, 2)
    cb = expected["dd_chargebacks"]
    assert cb[cb.chargebacks_1d > 0].merchant_id.unique().tolist() == ["m2"]
    assert cb.chargebacks_1d.max() == 1

    # The copies land in a later file; the incremental run recomputes their date and drops them.
    land_copies(etl_settings)
    incremental = run_batch(etl_settings, views=VIEWS)
    assert "skipped" not in incremental and incremental["start"] == "2026-05-01"
    assert incremental["events_read"] == 5
    assert incremental["duplicates_dropped"] == {"transactions": 2, "labels": 1}
    for name, table in tables(etl_settings).items():
        pd.testing.assert_frame_equal(table, expected[name], obj=f"{name} after the incremental run")

    # A full recompute (every date, every file) keeps the same copies.
    full = run_batch(etl_settings, start=date(2026, 5, 1), views=VIEWS)
    assert full["duplicates_dropped"] == {"transactions": 2, "labels": 1}
    for name, table in tables(etl_settings).items():
        pd.testing.assert_frame_equal(table, expected[name], obj=f"{name} after the full run")


def test_first_landed_orders_by_ingestion_then_partition_then_offset(spark):
    t = lambda s: datetime.fromisoformat(s).replace(tzinfo=timezone.utc)  # noqa: E731
    rows = [  # (id, _ingested_at, _kafka_partition, _kafka_offset, which copy)
        ("x", t("2026-05-01T10:00:01"), 0, 1, "x later"),
        ("x", t("2026-05-01T10:00:00"), 3, 9, "x first"),  # landed first, though higher partition and offset
        ("y", t("2026-05-01T10:00:00"), 2, 5, "y later"),
        ("y", t("2026-05-01T10:00:00"), 1, 7, "y first"),  # same batch time: the lower partition
        ("z", t("2026-05-01T10:00:00"), 1, 8, "z later"),
        ("z", t("2026-05-01T10:00:00"), 1, 4, "z first"),  # same partition and time: the lower offset
        ("w", t("2026-05-01T10:00:00"), 0, 0, "w first"),
    ]
    df = spark.createDataFrame(rows, "id string, _ingested_at timestamp, _kafka_partition int, _kafka_offset long, which string")
    kept = first_landed(df, "id").toPandas()
    assert sorted(kept["which"]) == ["w first", "x first", "y first", "z first"]
    assert list(kept.columns) == list(df.columns)
