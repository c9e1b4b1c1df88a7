"""The Spark feature job against an independent brute-force computation (pandas) of the
semantics in ``skewless.features.dsl``: value at t = aggregate over events in [b - w, b),
b = t's hop boundary; Feast-style point-in-time lookup = the latest row at or before t."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from etl.batch import run_batch
from skewless.contracts import TRANSACTIONS
from skewless.features.dsl import Aggregation as A
from skewless.features.dsl import Entity, EventSource, WindowedView
from skewless.lake_layout import LakeLayout
from tests.integration.spark_fixtures import etl_settings, spark  # noqa: F401

T0 = datetime(2026, 5, 1, tzinfo=timezone.utc)
user = Entity("user", "user_id")
tx = EventSource("transactions", "transactions", "event_time")
VIEW = WindowedView("t_user", (user,), tx, hop="1m", aggregations=(
    A("count", "5m"), A("sum", "5m", "amount"), A("mean", "1h", "amount"), A("min", "1h", "amount"),
    A("max", "5m", "amount"), A("distinct_count", "1h", "merchant_id", name="merchants_1h"),
    A("last", "1h", "country", name="last_country", dtype="string"), A("last_time", "1h", name="last_time_1h"),
))


def write_lake(settings, events: list[dict], tag: str) -> None:
    """Land events the way the ingestion sink does (hive partitions by UTC event hour)."""
    rows = [TRANSACTIONS.validate(e) for e in events]
    by_date: dict[str, list] = {}
    for i, r in enumerate(rows):
        r.update(_kafka_partition=0, _kafka_offset=i, _ingested_at=datetime.now(timezone.utc))
        ts = r["event_time"]
        by_date.setdefault(ts.strftime("%Y-%m-%d"), []).append(r)
    for d, rs in by_date.items():
        path = LakeLayout.of(settings).date_dir(settings.topics.transactions, d)
        path.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rs, schema=TRANSACTIONS.arrow_schema(set(rs[0]))), path / f"{tag}.parquet")


def event(user_id: str, t: datetime, amount: float, merchant: str = "m1", country: str = "DE", offset_h: int = 0) -> dict:
    local = t.astimezone(timezone(timedelta(hours=offset_h)))
    return {"transaction_id": f"{user_id}-{t.timestamp()}-{amount}", "user_id": user_id, "merchant_id": merchant,
            "amount": amount, "currency": "EUR", "country": country, "channel": "web", "device_id": "d",
            "event_time": local.isoformat()}


def brute_force(events: pd.DataFrame, user_id: str, t: pd.Timestamp) -> dict:
    hop = pd.Timedelta(VIEW.hop)
    b = t.floor(hop)
    ev = events[events.user_id == user_id]
    out = {}
    for a in VIEW.aggregations:
        w = pd.Timedelta(a.window)
        e = ev[(ev.event_time >= b - w) & (ev.event_time < b)].sort_values("event_time", kind="stable")
        if a.function == "count":
            out[a.feature_name] = len(e)
        elif a.function == "sum":
            out[a.feature_name] = float(e.amount.sum())
        elif a.function == "mean":
            out[a.feature_name] = float(e.amount.mean()) if len(e) else None
        elif a.function == "min":
            out[a.feature_name] = float(e.amount.min()) if len(e) else None
        elif a.function == "max":
            out[a.feature_name] = float(e.amount.max()) if len(e) else None
        elif a.function == "distinct_count":
            out[a.feature_name] = int(e.merchant_id.nunique())
        elif a.function == "last":
            # The latest event's value; among events at the same instant, the greatest value.
            out[a.feature_name] = e.sort_values(["event_time", "country"]).country.iloc[-1] if len(e) else None
        elif a.function == "last_time":
            out[a.feature_name] = e.event_time.iloc[-1].timestamp() if len(e) else None
    return out


def point_in_time(table: pd.DataFrame, user_id: str, t: pd.Timestamp) -> dict | None:
    rows = table[(table.user_id == user_id) & (table.event_timestamp <= t)]
    if rows.empty:
        return None
    return rows.sort_values("event_timestamp").iloc[-1].to_dict()


def empty_window() -> dict:
    return {a.feature_name: (0 if a.function in ("count", "distinct_count") else 0.0 if a.function == "sum" else None)
            for a in VIEW.aggregations}


def same(a, b) -> bool:
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None or (isinstance(b, float) and math.isnan(b))
    if isinstance(a, float) or isinstance(b, float):
        return b is not None and not (isinstance(b, float) and math.isnan(b)) and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def assert_matches(settings, events: list[dict], queries: list[tuple[str, pd.Timestamp]]) -> int:
    table = pd.read_parquet(LakeLayout.of(settings).features_dir(VIEW.name))
    table["event_timestamp"] = pd.to_datetime(table["event_timestamp"], utc=True)
    ev = pd.DataFrame([TRANSACTIONS.validate(e) for e in events])
    ev["event_time"] = pd.to_datetime(ev["event_time"], utc=True)
    checked = 0
    for user_id, t in queries:
        got = point_in_time(table, user_id, t) or empty_window()
        want = brute_force(ev, user_id, t)
        for k, v in want.items():
            assert same(v, got.get(k)), (user_id, t, k, v, got.get(k))
        checked += 1
    return checked


def gen_events(seed: int, n: int = 400) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        u = f"u{rng.integers(0, 6)}"
        # Minute-aligned times on purpose (boundaries), some exact duplicates (equal timestamps).
        minute = int(rng.integers(0, 6 * 60))
        t = T0 + timedelta(minutes=minute, seconds=0 if rng.random() < 0.3 else float(rng.integers(0, 60)))
        out.append(event(u, t, float(rng.integers(1, 500)), f"m{rng.integers(0, 8)}", ["DE", "FR", "US"][int(rng.integers(0, 3))],
                         offset_h=int(rng.choice([0, 2, -5]))))
        if rng.random() < 0.1:
            out.append(event(u, t, float(rng.integers(1, 500)), "m9"))  # same user, same instant
    return out


def queries(seed: int, users=6, n=300) -> list[tuple[str, pd.Timestamp]]:
    rng = np.random.default_rng(seed + 1)
    qs = []
    for _ in range(n):
        t = pd.Timestamp(T0) + pd.Timedelta(seconds=int(rng.integers(-600, 9 * 3600)))
        if rng.random() < 0.3:
            t = t.floor("1min")  # exactly on a boundary
        qs.append((f"u{rng.integers(0, users)}", t))
    return qs


@pytest.fixture
def lake_settings(etl_settings):  # noqa: F811 - a private lake; no Kafka or Redis needed
    return etl_settings


def test_random_events_match_brute_force_at_random_and_boundary_times(lake_settings, tmp_path):
    events = gen_events(1)
    write_lake(lake_settings, events, "a")
    run_batch(lake_settings, views=(VIEW,))
    assert assert_matches(lake_settings, events, queries(1)) == 300


def test_values_decay_to_zero_for_a_quiet_user_and_events_never_see_themselves(lake_settings):
    t = T0 + timedelta(minutes=10, seconds=30)
    events = [event("quiet", t, 100.0)]
    write_lake(lake_settings, events, "a")
    run_batch(lake_settings, views=(VIEW,))
    qs = [("quiet", pd.Timestamp(t)),  # the event itself: not counted
          ("quiet", pd.Timestamp(T0 + timedelta(minutes=11))),  # counted from the next boundary
          ("quiet", pd.Timestamp(T0 + timedelta(minutes=16))),  # left the 5m window
          ("quiet", pd.Timestamp(T0 + timedelta(hours=3)))]  # quiet for hours: all decayed
    assert assert_matches(lake_settings, events, qs) == 4
    table = pd.read_parquet(LakeLayout.of(lake_settings).features_dir(VIEW.name))
    last = table.sort_values("event_timestamp").iloc[-1]
    assert last["count_5m"] == 0 and last["merchants_1h"] == 0 and pd.isna(last["mean_amount_1h"])


def test_late_events_are_picked_up_by_the_next_incremental_run_and_reruns_are_idempotent(lake_settings):
    layout = LakeLayout.of(lake_settings)
    events = gen_events(2, n=150)
    write_lake(lake_settings, events, "a")
    first = run_batch(lake_settings, views=(VIEW,))
    assert first["views"][VIEW.name]["rows"] > 0
    again = run_batch(lake_settings, views=(VIEW,))
    assert again.get("skipped")  # nothing new landed: incremental run does nothing
    before = pd.read_parquet(layout.features_dir(VIEW.name)).sort_values(["user_id", "event_timestamp"]).reset_index(drop=True)
    # Backfill the same range again: identical output.
    run_batch(lake_settings, start=date(2026, 4, 30), end=date(2026, 5, 3), views=(VIEW,))
    after = pd.read_parquet(layout.features_dir(VIEW.name)).sort_values(["user_id", "event_timestamp"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(before, after)
    # A late event (its time is hours in the past) lands after the run.
    late = [event("u1", T0 + timedelta(hours=1, minutes=3, seconds=5), 999.0, "late-merchant")]
    write_lake(lake_settings, late, "late")
    inc = run_batch(lake_settings, views=(VIEW,))
    assert not inc.get("skipped")
    qs = [("u1", pd.Timestamp(T0 + timedelta(hours=1, minutes=m))) for m in range(0, 70, 1)]
    assert assert_matches(lake_settings, events + late, qs) == len(qs)
