"""Planning of the Spark feature job, without Spark: which columns it reads, which output
dates a run (re)computes, and what counts as newly landed."""

from __future__ import annotations

import time
from datetime import date, timedelta
from pathlib import Path

import pytest

from etl.batch import _save_state, needed_columns, plan_range, watched_contracts
from feature_repo.specs import VIEWS
from skewless.errors import ConfigError
from skewless.features.dsl import Aggregation, Entity, EventSource, WindowedView
from skewless.lake_layout import LakeLayout
from skewless.settings import load_settings


def _settings(tmp_path):
    return load_settings(None).model_copy(update={"lake_path": str(tmp_path / "lake"), "state_dir": tmp_path / "state"})


def _touch(settings, topic: str, day: str, name: str = "f.parquet"):
    p = LakeLayout.of(settings).date_dir(topic, day) / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x")
    return p


def test_only_the_columns_the_views_use_are_read():
    # The business id and the landing order pick the one copy of an event that counts.
    once = {"_ingested_at", "_kafka_partition", "_kafka_offset", "transaction_id"}
    assert needed_columns(VIEWS, "transactions") == sorted(
        {"event_time", "user_id", "merchant_id", "amount", "country", "device_id"} | once)
    # Chargebacks: label time, the flag, and the key that finds the transaction's merchant.
    assert needed_columns(VIEWS, "labels") == sorted({"is_fraud", "label_time"} | once)


def test_first_run_covers_all_data_plus_the_longest_window(tmp_path):
    s = _settings(tmp_path)
    assert plan_range(s, VIEWS, None, None) is None  # nothing landed
    _touch(s, s.topics.transactions, "2026-05-01")
    _touch(s, s.topics.labels, "2026-05-03")
    start, end = plan_range(s, VIEWS, None, None)  # the longest window: 30 days (and a 1h hop)
    assert start == date(2026, 5, 1) and end == date(2026, 5, 3) + timedelta(days=32)
    assert plan_range(s, VIEWS, date(2026, 5, 2), date(2026, 5, 3)) == (date(2026, 5, 2), date(2026, 5, 3))


def test_incremental_runs_start_at_the_earliest_date_with_a_newly_landed_file(tmp_path):
    s = _settings(tmp_path)
    _touch(s, s.topics.transactions, "2026-05-01")
    _touch(s, s.topics.transactions, "2026-05-09")
    time.sleep(0.02)
    _save_state(s, {"started_at": time.time()})  # a run started after those landed
    time.sleep(0.02)
    assert plan_range(s, VIEWS, None, None) is None  # nothing new since the previous run
    _touch(s, s.topics.transactions, "2026-05-05", "_temp.parquet")  # temp files do not count
    _touch(s, s.topics.transactions, "2026-05-04", ".hidden.parquet")
    assert plan_range(s, VIEWS, None, None) is None
    _touch(s, s.topics.transactions, "2026-05-07", "late.parquet")  # a late file for an old date
    assert plan_range(s, VIEWS, None, None)[0] == date(2026, 5, 7)
    # Only --end, before the earliest new date: refused before any Spark work, not run empty.
    with pytest.raises(ConfigError, match="range is empty"):
        plan_range(s, VIEWS, None, date(2026, 5, 6))


def test_a_lake_on_object_storage_is_refused_with_a_clear_message_and_file_uris_work(tmp_path):
    s = _settings(tmp_path)
    with pytest.raises(ConfigError, match="must be local"):
        plan_range(s.model_copy(update={"lake_path": "s3://bucket/lake"}), VIEWS, None, None)
    _touch(s, s.topics.transactions, "2026-05-01")
    uri = s.model_copy(update={"lake_path": "file://" + s.lake_path})
    assert plan_range(uri, VIEWS, None, None)[0] == date(2026, 5, 1)


# A view on a third source: model scores, from the predictions topic.
SCORES = WindowedView(
    "user_scores", (Entity("user", "user_id"),), EventSource("scores", contract="predictions", time_column="predicted_at"),
    aggregations=(Aggregation("max", "7d", "score"),), hop="1h",
)


def test_the_planner_watches_the_contracts_the_views_read():
    # Chargebacks are labels enriched with transactions: both are watched, once each.
    assert watched_contracts(VIEWS) == ("transactions", "labels")
    assert watched_contracts((SCORES,)) == ("predictions",)
    assert watched_contracts(VIEWS + (SCORES,)) == ("transactions", "labels", "predictions")
    assert {"predicted_at", "user_id", "score", "request_id"} <= set(needed_columns((SCORES,), "predictions"))
    unknown = WindowedView("v", (Entity("user", "user_id"),), EventSource("s", contract="clicks", time_column="t"),
                           aggregations=(Aggregation("count", "1h"),))
    with pytest.raises(ConfigError, match="view v reads events of 'clicks', which is no event contract"):
        watched_contracts((unknown,))


def test_a_file_landed_on_a_third_source_triggers_an_incremental_run(tmp_path):
    s = _settings(tmp_path)
    views = VIEWS + (SCORES,)
    _touch(s, s.topics.transactions, "2026-05-01")
    _touch(s, s.topics.predictions, "2026-05-02")
    assert plan_range(s, (SCORES,), None, None)[0] == date(2026, 5, 2)  # only its own source counts
    time.sleep(0.02)
    _save_state(s, {"started_at": time.time()})
    time.sleep(0.02)
    assert plan_range(s, views, None, None) is None
    _touch(s, s.topics.predictions, "2026-05-04", "late.parquet")  # only the third topic has news
    assert plan_range(s, views, None, None)[0] == date(2026, 5, 4)
    assert plan_range(s, VIEWS, None, None) is None  # views that do not read it are not re-run
