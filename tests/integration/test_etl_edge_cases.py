"""Each semantic edge case of the windowed features, Spark output against an independent
brute-force computation in DuckDB over the raw events.

Brute force: for a query (entity, t), b = t floored to the hop; the value is the
aggregate over the entity's events with b - w <= event time < b. Spark side: the
offline table looked up the way Feast does it (latest row at or before t: a DuckDB
ASOF join); no row means the empty-window values (0 for counts and sums, else null).
"""

from __future__ import annotations

import math
import os
from datetime import datetime, timedelta, timezone

import duckdb
import numpy as np
import pandas as pd
import pytest

from etl.batch import run_batch
from skewless.features.dsl import Aggregation as A
from skewless.features.dsl import Entity, EventSource, WindowedView
from skewless.lake_layout import LakeLayout
from tests.integration.lake_fixtures import land
from tests.integration.spark_fixtures import etl_settings, spark  # noqa: F401

pytestmark = pytest.mark.integration

T0 = datetime(2026, 5, 1, 22, 0, tzinfo=timezone.utc)  # two hours before a UTC midnight
user = Entity("user", "user_id")
tx = EventSource("transactions", "transactions", "event_time")


def every_kind(name: str, hop: str, short: str, long: str) -> WindowedView:
    return WindowedView(name, (user,), tx, hop=hop, aggregations=(
        A("count", short), A("count", long), A("sum", short, "amount"), A("mean", long, "amount"),
        A("min", long, "amount"), A("max", short, "amount"),
        A("distinct_count", short, "merchant_id", name="merchants_short"),
        A("distinct_count", long, "merchant_id", name="merchants_long"),
        A("last", long, "country", name="last_country", dtype="string"),
        A("last_time", long, name="last_time_long"),
    ))


VIEW = every_kind("e_user", "1m", "5m", "1h")
HOPPED = every_kind("e_user_hop", "5m", "15m", "2h")

_SQL = {
    "count": "count(e.amount)", "sum": "coalesce(sum(e.amount), 0)", "mean": "avg(e.amount)",
    "min": "min(e.amount)", "max": "max(e.amount)", "distinct_count": "count(DISTINCT e.merchant_id)",
    "last": "last(e.country ORDER BY e.event_time, e.country)",
    "last_time": "epoch_us(max(e.event_time)) / 1e6",
}


def event(user_id: str, t: datetime, amount: float = 10.0, merchant: str = "m1", country: str = "DE",
          offset_h: float = 0) -> dict:
    local = t.astimezone(timezone(timedelta(hours=offset_h)))
    return {"transaction_id": f"{user_id}-{t.timestamp()}-{amount}-{merchant}-{country}", "user_id": user_id,
            "merchant_id": merchant, "amount": amount, "currency": "EUR", "country": country, "channel": "web",
            "device_id": "d", "event_time": local.isoformat()}


def expected(view: WindowedView, events: list[dict], q: pd.DataFrame) -> pd.DataFrame:
    """DuckDB brute force over the raw events."""
    ev = pd.DataFrame(events)
    ev["event_time"] = pd.to_datetime(ev["event_time"], utc=True, format="ISO8601")
    q = q.assign(b=q["t"].dt.floor(pd.Timedelta(view.hop)))
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("ev", ev)
    con.register("q", q)
    out = q[["qid"]].copy()
    for a in view.aggregations:
        w = int(a.window_td.total_seconds() * 1e6)
        res = con.execute(f"""
            SELECT q.qid, {_SQL[a.function]} AS v FROM q LEFT JOIN ev e
            ON e.user_id = q.user_id AND e.event_time >= q.b - to_microseconds({w}) AND e.event_time < q.b
            GROUP BY q.qid""").df()
        out = out.merge(res.rename(columns={"v": a.feature_name}), on="qid")
    return out.sort_values("qid").reset_index(drop=True)


def looked_up(settings, view: WindowedView, q: pd.DataFrame) -> pd.DataFrame:
    """Feast-style point-in-time lookup in the Spark output: the latest row at or before t."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("q", q)
    f = con.execute(f"SELECT * FROM read_parquet('{LakeLayout.of(settings).features_dir(view.name)}/*/*.parquet')").df()
    con.register("f", f)
    got = con.execute("""SELECT q.qid, f.* EXCLUDE (user_id, event_timestamp) FROM q
                         ASOF LEFT JOIN f ON q.user_id = f.user_id AND q.t >= f.event_timestamp""").df()
    got = got.drop(columns=[c for c in ("date",) if c in got]).sort_values("qid").reset_index(drop=True)
    for a in view.aggregations:  # no row yet: the values of an empty window
        if a.function in ("count", "distinct_count", "sum"):
            got[a.feature_name] = got[a.feature_name].fillna(0)
    return got


def _null(x) -> bool:
    return x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x))


def assert_same(settings, view: WindowedView, events: list[dict], queries: list[tuple[str, datetime]]) -> None:
    q = pd.DataFrame({"qid": range(len(queries)), "user_id": [u for u, _ in queries],
                      "t": pd.to_datetime([t for _, t in queries], utc=True)})
    want, got = expected(view, events, q), looked_up(settings, view, q)
    bad = []
    for a in view.aggregations:
        for i, (x, y) in enumerate(zip(want[a.feature_name], got[a.feature_name])):
            same = (_null(x) and _null(y)) or (not _null(x) and not _null(y) and (
                math.isclose(float(x), float(y), rel_tol=1e-9, abs_tol=1e-9) if isinstance(x, (int, float, np.number))
                else x == y))
            if not same:
                bad.append((queries[i], a.feature_name, x, y))
    assert not bad, bad[:10]


def around(t: datetime, *deltas: timedelta) -> list[datetime]:
    us = timedelta(microseconds=1)
    return [t + d + e for d in deltas for e in (-us, timedelta(0), us)]


def test_window_boundaries_are_half_open_and_evaluated_at_hops(etl_settings):
    # Events exactly on hop boundaries and a microsecond either side of them.
    b = T0 + timedelta(minutes=10)
    us = timedelta(microseconds=1)
    events = [event("u1", b, 1.0, "m1"), event("u1", b - us, 2.0, "m2"), event("u1", b + us, 4.0, "m3"),
              event("u1", b + timedelta(minutes=5), 8.0, "m4")]
    land(etl_settings, "transactions", events)
    run_batch(etl_settings, views=(VIEW,))
    m = timedelta(minutes=1)
    queries = [("u1", t) for t in around(b, timedelta(0), m, 5 * m, 6 * m, 10 * m, 60 * m, 61 * m, 66 * m)]
    assert_same(etl_settings, VIEW, events, queries)
    # The event at b is not seen at b (strictly before), and is seen from the next hop on.
    table = pd.read_parquet(LakeLayout.of(etl_settings).features_dir(VIEW.name))
    at = table.set_index(pd.to_datetime(table["event_timestamp"], utc=True))
    assert at.loc[pd.Timestamp(b), "count_5m"] == 1 and at.loc[pd.Timestamp(b + m), "count_5m"] == 3


def test_empty_windows_decay_to_zero_and_before_the_first_event_there_is_nothing(etl_settings):
    t = T0 + timedelta(minutes=3, seconds=20)
    events = [event("quiet", t, 50.0)]
    land(etl_settings, "transactions", events)
    run_batch(etl_settings, views=(VIEW,))
    queries = [("quiet", t - timedelta(hours=1)), ("quiet", t), ("quiet", t + timedelta(minutes=30)),
               ("quiet", t + timedelta(hours=2)), ("quiet", t + timedelta(days=3)), ("nobody", t + timedelta(hours=1))]
    assert_same(etl_settings, VIEW, events, queries)
    table = pd.read_parquet(LakeLayout.of(etl_settings).features_dir(VIEW.name)).sort_values("event_timestamp")
    first, last = table.iloc[0], table.iloc[-1]
    assert pd.Timestamp(first["event_timestamp"]) == pd.Timestamp(t).ceil("1min")
    assert (last["count_1h"], last["sum_amount_5m"], last["merchants_long"]) == (0, 0.0, 0)
    assert pd.isna(last["mean_amount_1h"]) and last["last_country"] is None and pd.isna(last["last_time_long"])


def test_equal_timestamps_all_count_and_the_last_value_is_deterministic(etl_settings):
    t = T0 + timedelta(minutes=7, seconds=30)
    events = [event("twin", t, a, m, c) for a, m, c in
              [(5.0, "m1", "FR"), (7.0, "m2", "DE"), (7.0, "m2", "US"), (1.0, "m1", "BR")]]
    events.append(event("twin", t + timedelta(minutes=2), 3.0, "m3", "AT"))
    land(etl_settings, "transactions", events)
    run_batch(etl_settings, views=(VIEW,))
    queries = [("twin", x) for x in around(t, timedelta(0), timedelta(minutes=1), timedelta(minutes=4),
                                           timedelta(minutes=6), timedelta(minutes=8))]
    assert_same(etl_settings, VIEW, events, queries)


def test_late_events_are_picked_up_by_the_next_incremental_run(etl_settings):
    rng = np.random.default_rng(5)
    events = [event(f"u{rng.integers(0, 3)}", T0 + timedelta(seconds=int(s)), float(rng.integers(1, 100)),
                     f"m{rng.integers(0, 4)}") for s in rng.integers(0, 3 * 3600, 120)]
    land(etl_settings, "transactions", events, tag="first")
    run_batch(etl_settings, views=(VIEW,))
    # Late: event times two hours in the past, landed after the run, crossing UTC midnight.
    late = [event("u1", T0 + timedelta(minutes=m, seconds=7), 1000.0 + m, "late") for m in (30, 95, 125, 170)]
    land(etl_settings, "transactions", late, tag="late")
    summary = run_batch(etl_settings, views=(VIEW,))
    assert summary["start"] == T0.date().isoformat()  # recomputed from the late events' date
    queries = [("u1", T0 + timedelta(minutes=m, seconds=s)) for m in range(0, 300, 3) for s in (0, 31)]
    assert_same(etl_settings, VIEW, events + late, queries)


def test_timezones_event_times_in_any_offset_are_utc_and_days_split_at_utc_midnight(etl_settings):
    # Events written with +05:30, -08:00 and +14:00 offsets around the UTC midnight after T0.
    midnight = T0 + timedelta(hours=2)
    events = [event("tz", midnight + timedelta(minutes=m), float(i + 1), f"m{i % 3}", offset_h=off)
              for i, (m, off) in enumerate([(-7, 5.5), (-2, -8), (0, 14), (1, 5.5), (3, -8), (58, 14)])]
    land(etl_settings, "transactions", events)
    raw_dates = sorted(p.name for p in LakeLayout.of(etl_settings).raw_dir(etl_settings.topics.transactions).iterdir())
    assert raw_dates == [f"date={T0.date()}", f"date={midnight.date()}"]
    run_batch(etl_settings, views=(VIEW,))
    queries = [("tz", midnight + timedelta(minutes=m, seconds=s)) for m in range(-10, 130, 1) for s in (0, 45)]
    assert_same(etl_settings, VIEW, events, queries)
    table = pd.read_parquet(LakeLayout.of(etl_settings).features_dir(VIEW.name))
    days = {str(d) for d in table["date"].unique()}
    assert {str(T0.date()), str(midnight.date())} <= days


def test_random_events_with_a_coarser_hop_match_brute_force(etl_settings):
    rng = np.random.default_rng(11)
    events = []
    for _ in range(300):
        t = T0 + timedelta(minutes=int(rng.integers(0, 8 * 60)), seconds=int(rng.choice([0, 0, 17, 59])))
        events.append(event(f"u{rng.integers(0, 5)}", t, float(rng.integers(1, 300)), f"m{rng.integers(0, 6)}",
                            ["DE", "FR", "US"][int(rng.integers(0, 3))], offset_h=float(rng.choice([0, 2, -5]))))
    land(etl_settings, "transactions", events)
    run_batch(etl_settings, views=(HOPPED,))
    queries = [(f"u{rng.integers(0, 5)}", T0 + timedelta(seconds=int(s))) for s in rng.integers(-1800, 11 * 3600, 250)]
    queries += [(u, T0 + timedelta(minutes=5 * k)) for u in ("u0", "u3") for k in range(0, 130, 7)]
    assert_same(etl_settings, HOPPED, events, queries)


def test_files_of_an_older_contract_version_read_the_new_column_as_null(etl_settings):
    view = WindowedView("e_mcc", (user,), tx, hop="1m", aggregations=(
        A("count", "1h"), A("distinct_count", "1h", "mcc", name="mccs_1h")))
    v1 = [event("u1", T0 + timedelta(minutes=m)) for m in (1, 2)]
    v2 = [{**event("u1", T0 + timedelta(minutes=m), merchant=f"m{m}"), "schema_version": 2, "mcc": code}
          for m, code in ((3, "5411"), (4, "5812"), (5, "5411"))]
    land(etl_settings, "transactions", v1, tag="v1")  # files without the mcc column at all
    land(etl_settings, "transactions", v2, tag="v2")
    run_batch(etl_settings, views=(view,))
    table = pd.read_parquet(LakeLayout.of(etl_settings).features_dir("e_mcc")).sort_values("event_timestamp")
    last = table[pd.to_datetime(table.event_timestamp, utc=True) == pd.Timestamp(T0 + timedelta(minutes=6))].iloc[0]
    assert (last["count_1h"], last["mccs_1h"]) == (5, 2)


def test_a_file_written_before_a_run_but_renamed_into_place_during_it_is_picked_up_next(etl_settings):
    events = [event("u1", T0 + timedelta(minutes=m), 1.0) for m in (1, 2, 3)]
    land(etl_settings, "transactions", events, tag="first")
    # The sink writes a temp file (ignored: leading underscore), then renames it.
    late = [event("u1", T0 + timedelta(minutes=4, seconds=30), 100.0)]
    land(etl_settings, "transactions", late, tag="_inflight")
    temp = next(LakeLayout.of(etl_settings).root.rglob("_inflight.parquet"))
    old = temp.stat().st_mtime - 5
    os.utime(temp, (old, old))  # written well before the run starts
    run_batch(etl_settings, views=(VIEW,))
    temp.rename(temp.with_name("landed.parquet"))  # lands while (after) the run reads
    summary = run_batch(etl_settings, views=(VIEW,))
    assert not summary.get("skipped")
    queries = [("u1", T0 + timedelta(minutes=m)) for m in range(0, 70, 1)]
    assert_same(etl_settings, VIEW, events + late, queries)
