"""The in-process incremental path's Arrow helpers (``etl.incremental``): the copy it keeps
of a retried event, the rows it matches by several keys, a view's source events — what
Spark's ``first_landed``, semi-joins and ``source_events`` give (the tables' bit-for-bit
equality with a Spark backfill is tested in tests/integration/test_etl_incremental.py)."""

from __future__ import annotations

from datetime import datetime, timezone

import pyarrow as pa

from etl import incremental
from skewless.features.dsl import Aggregation as A
from skewless.features.dsl import Entity, EventSource, WindowedView

T = datetime(2026, 3, 1, tzinfo=timezone.utc)


def landed(ids, users, ingested, partitions, offsets):
    ts = pa.timestamp("us", tz="UTC")
    return pa.table({"transaction_id": ids, "user_id": users,
                     "_ingested_at": pa.array([T.replace(second=s) for s in ingested], ts),
                     "_kafka_partition": pa.array(partitions, pa.int32()), "_kafka_offset": pa.array(offsets, pa.int64())})


def test_first_landed_keeps_the_copy_landed_first_by_ingestion_then_partition_then_offset():
    t = landed(["a", "b", "a", "c", "c", "a"], ["late", "u2", "first", "u3-late", "u3", "tie-late"],
               [5, 1, 2, 3, 3, 2], [0, 0, 1, 1, 0, 1], [9, 1, 4, 2, 8, 5])
    got = incremental.first_landed_arrow(t, "transactions").sort_by("transaction_id")
    assert got.column("user_id").to_pylist() == ["first", "u2", "u3"]
    once = t.slice(1, 1)  # one copy per id: as it is
    assert incremental.first_landed_arrow(once, "transactions").equals(once)


def test_rows_matched_by_several_keys_match_the_pair_not_each_column():
    rows = pa.table({"user_id": ["u1", "u1", "u2", "u2"], "merchant_id": ["m1", "m2", "m1", "m2"]})
    keys = pa.table({"user_id": ["u1", "u2"], "merchant_id": ["m2", "m1"]})
    assert incremental._isin(rows, ["user_id", "merchant_id"], keys).to_pylist() == [False, True, True, False]
    assert incremental._isin(rows, ["user_id"], keys.slice(0, 1)).to_pylist() == [True, True, False, False]


def test_source_events_filter_and_enrich_as_declared():
    view = WindowedView("cb", (Entity("merchant", "merchant_id"),),
                        EventSource("cb", "labels", "label_time", enrich=("transactions", "transaction_id", ("merchant_id",)),
                                    where="is_fraud"), hop="1m", aggregations=(A("count", "1d"),))
    ts = pa.timestamp("us", tz="UTC")
    labels = pa.table({"transaction_id": ["t1", "t2", "t3", "t4"], "is_fraud": [True, False, None, True],
                       "label_time": pa.array([T] * 4, ts)})
    tx = pa.table({"transaction_id": ["t1", "t2", "t3"], "merchant_id": ["m1", "m2", "m3"]})
    ev = incremental.local_source_events(view, {"labels": labels, "transactions": tx})
    # Not fraud, unknown, or no transaction: no chargeback.
    assert ev[["transaction_id", "merchant_id"]].values.tolist() == [["t1", "m1"]] and "_ts" in ev
