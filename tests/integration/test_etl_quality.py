"""A feature table that breaks a declared check fails the ETL run, with a report.

Events landed by the sink pass the event checks, so the bad value comes from a raw file
written beside the sink's without them (as a file copied into the lake by hand would be):
its negative amount makes a mean and a sum the table's declared ranges refuse."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from etl.batch import run_batch
from skewless.contracts import TRANSACTIONS
from skewless.errors import DataError
from skewless.features.dsl import Aggregation as A
from skewless.features.dsl import Entity, EventSource, WindowedView
from skewless.lake_layout import LakeLayout
from tests.integration.lake_fixtures import land
from tests.integration.spark_fixtures import etl_settings, spark  # noqa: F401

VIEW = WindowedView("q_spend", (Entity("user", "user_id"),), EventSource("transactions", "transactions", "event_time"),
                    hop="1h", aggregations=(A("count", "1h"), A("sum", "1h", "amount"), A("mean", "1h", "amount")))


def tx(tid: str, user: str, minute: int, amount: float) -> dict:
    return {"transaction_id": tid, "user_id": user, "merchant_id": "m1", "amount": amount, "currency": "EUR",
            "country": "DE", "channel": "web", "device_id": "d1", "event_time": f"2026-05-01T10:{minute:02d}:00Z"}


def test_a_feature_table_breaking_a_declared_check_fails_the_run_with_a_report(etl_settings):
    land(etl_settings, "transactions", [tx("a", "u1", 5, 10.0), tx("b", "u1", 20, 7.5), tx("c", "u2", 30, 3.0)])
    row = {**TRANSACTIONS.validate(tx("x", "u9", 40, 1.0)), "amount": -5.0, "_kafka_partition": 1,
           "_kafka_offset": 0, "_ingested_at": datetime.now(timezone.utc)}
    folder = LakeLayout.of(etl_settings).date_dir(etl_settings.topics.transactions, "2026-05-01")
    pq.write_table(pa.Table.from_pylist([row], schema=TRANSACTIONS.arrow_schema(set())), folder / "by-hand.parquet")

    with pytest.raises(DataError, match=r"feature table checks failed: ") as err:
        run_batch(etl_settings, views=(VIEW,))
    # One line naming each failed check and its count of rows (u9's row at 11:00).
    assert set(re.findall(r"q_spend\.\S+ \(\d+\)", str(err.value))) == \
        {"q_spend.sum_amount_1h.min (1)", "q_spend.mean_amount_1h.min (1)"}
    report = json.loads(Path(err.value.hint.removeprefix("the report: ")).read_text())
    failed = {f["check"]: f["count"] for f in report["views"]["q_spend"]["failed"]}
    assert failed == {"q_spend.sum_amount_1h.min": 1, "q_spend.mean_amount_1h.min": 1}
    assert report["views"]["q_spend"]["profile"]["events"] == 4
    # The incremental watermark did not move: the next run recomputes this range.
    assert not LakeLayout.of(etl_settings).etl_state_path.exists()
