"""An incremental run recomputes only the entities with new events (``etl.incremental``)
and its tables equal a full backfill of the same lake, row for row and bit for bit; a
crash inside its merge loses nothing.

Two lakes get the same files: one computes everything in one run, the other runs on the
first files, then again incrementally after more land — new events on the last day, late
events days back, a retried copy of an old transaction holding another user (it must not
count) and late chargeback labels of old transactions (enriched: the merchant comes from
the transaction)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from etl import incremental
from etl.batch import run_batch
from ingestion.simulator import simulate
from skewless.features.definitions import load
from skewless.features.dsl import Aggregation as A
from skewless.features.dsl import Entity, EventSource, WindowedView
from skewless.lake_layout import LakeLayout
from tests.integration.lake_fixtures import land
from tests.integration.spark_fixtures import etl_settings, spark  # noqa: F401

pytestmark = pytest.mark.integration

START = datetime(2026, 3, 1, tzinfo=timezone.utc)
DAYS = 6


def batches(retry: bool = True):
    """The first files, then what lands after the first run (in landing order); ``retry``:
    with a retried copy of an old transaction among them."""
    base = simulate(3_000, 3, START, DAYS)
    new = simulate(30, 4, START + timedelta(days=DAYS - 1), 1)  # 1%, existing users and merchants
    late = simulate(20, 5, START + timedelta(days=2), 1)  # events of three days ago, landed now
    renamed(new.transactions + late.transactions, "n")
    retried = [t for t in base.transactions if t["event_time"].startswith("2026-03-04")][5]
    copy = dict(retried, user_id="u000999", amount=999.0)  # a retry with other content: never counts
    labelled = {x["transaction_id"] for x in base.labels}
    fraud = [t for t in base.transactions if t["event_time"].startswith("2026-03-03") and t["transaction_id"] not in labelled]
    labels = [{"schema_version": 1, "transaction_id": t["transaction_id"], "is_fraud": True,
               "label_time": t["event_time"].replace("2026-03-03", "2026-03-04")} for t in fraud[:3]]
    first = [("transactions", base.transactions, "a"), ("labels", base.labels, "a")]
    then = [("transactions", new.transactions + late.transactions, "b"), ("transactions", [copy], "c"),
            ("labels", labels, "b")]
    return first, then if retry else [b for b in then if b[2] != "c"]


def renamed(events: list[dict], tag: str) -> list[dict]:
    """``events`` with transaction ids of their own (``-<tag><i>``): new events, not retries."""
    for i, e in enumerate(events):
        e["transaction_id"] = f"{e['transaction_id']}-{tag}{i}"
    return events


def base_and_new(etl_settings, days: int, new_day: int):
    """400 transactions over ``days`` days, 10 new ones on day ``new_day``, and the settings
    of a lake of its own for a full run over both: (base, new, full)."""
    base = simulate(400, 6, START, days)
    new = simulate(10, 7, START + timedelta(days=new_day), 1)
    renamed(new.transactions, "n")
    return base, new, settings_under(etl_settings, "full")


def tables(settings, views) -> dict[str, pd.DataFrame]:
    out = {}
    for v in views:
        df = pd.read_parquet(LakeLayout.of(settings).features_dir(v.name)).drop(columns="date")
        out[v.name] = df.sort_values([*v.join_keys, "event_timestamp"]).reset_index(drop=True)
    return out


def assert_same(got: dict[str, pd.DataFrame], want: dict[str, pd.DataFrame]) -> None:
    assert got.keys() == want.keys()
    for name in want:
        pd.testing.assert_frame_equal(got[name], want[name], check_exact=True, obj=name)


def settings_under(settings, name):
    root = LakeLayout.of(settings).root.parent / name
    return settings.model_copy(update={"lake_path": str(root / "lake"), "state_dir": root / "state"})


def incremental_and_full(etl_settings, views, first, then, engine="auto"):
    """Tables of a full run over every file, and the summary of an incremental run after the
    first files, with its tables."""
    full = settings_under(etl_settings, "full")
    for contract, events, tag in first + then:
        land(full, contract, events, tag)
    run_batch(full, views=views)
    inc = settings_under(etl_settings, "inc")
    for contract, events, tag in first:
        land(inc, contract, events, tag)
    assert run_batch(inc, views=views)["by_entity"] == []  # the first run computes everything
    for contract, events, tag in then:
        land(inc, contract, events, tag)
    summary = run_batch(inc, views=views, engine=engine)
    return tables(full, views), summary, tables(inc, views), inc


def test_an_incremental_run_equals_a_full_backfill_of_the_same_files(etl_settings):
    views = load(etl_settings).views
    first, then = batches()
    full = settings_under(etl_settings, "full")
    for contract, events, tag in first + then:
        land(full, contract, events, tag)
    run_batch(full, views=views)
    want = tables(full, views)

    inc = settings_under(etl_settings, "inc")
    for contract, events, tag in first:
        land(inc, contract, events, tag)
    assert run_batch(inc, views=views)["by_entity"] == []  # the first run computes everything
    for contract, events, tag in then:
        land(inc, contract, events, tag)
    summary = run_batch(inc, views=views)
    assert summary["by_entity"] == [v.name for v in views]
    assert summary["start"] == (START + timedelta(days=2)).date().isoformat()  # from the late events' date
    assert_same(tables(inc, views), want)
    # Only the new events' entities were recomputed; the retried copy dropped, as in a full run.
    for v in views:
        entities = want[v.name][list(v.join_keys)].drop_duplicates().shape[0]
        assert 0 < summary["views"][v.name]["entities"] < entities or v.source.enrich
    assert summary["duplicates_dropped"]["transactions"] == 1
    # A retry among the new files: no view of transactions adds the new events to its table.
    assert {v["mode"] for v in summary["views"].values()} == {"entities"}
    # The chargebacks' affected merchants need a join with every old transaction: Spark.
    assert summary["engine"] == "spark"


@pytest.mark.parametrize("engine", ["auto", "spark"])
def test_count_views_add_the_new_events_to_their_table(etl_settings, engine):
    """Count-only views (``etl.windows.additive``) with no retry among the new files: their
    rows from the new events' date on are the table's plus the new events' (late events and
    late chargeback labels included) — the very rows of a full run. Computed in-process
    (``etl.incremental.plan_local``: every view by entity, the enriched one additive) or,
    asked for, with Spark: the same rows either way."""
    views = load(etl_settings).views
    want, summary, got, _ = incremental_and_full(etl_settings, views, *batches(retry=False), engine=engine)
    assert_same(got, want)
    assert summary["engine"] == ("local" if engine == "auto" else "spark")
    modes = {name: v["mode"] for name, v in summary["views"].items()}
    assert modes == {v.name: "additive" if all(a.function == "count" for a in v.aggregations) else "entities"
                     for v in views}
    assert {"merchant_activity", "merchant_chargebacks", "user_merchant"} <= {n for n, m in modes.items()
                                                                               if m == "additive"}
    assert summary["views"]["merchant_chargebacks"]["entities"] > 0  # the late labels
    assert summary["quality"]["failed"] == 0


@pytest.mark.parametrize("index", ["kept", "lost"])
def test_a_retry_landed_before_the_last_run_is_known_from_the_index(etl_settings, index):
    """A retried copy (another user) landed before the previous run; then new events of the
    user of the copy that does not count. Recomputing that user must drop the copy, which
    only the index of retried ids says has another copy (or, when the index is lost, one
    scan of the ids that rebuilds it)."""
    base = simulate(1_500, 8, START, 4)
    old = [t for t in base.transactions if t["event_time"].startswith("2026-03-03")]
    loser = old[-1]["user_id"]
    copy = dict(old[3], user_id=loser, amount=555.0)  # lands after the original: never counts
    new = [dict(t, transaction_id=f"{t['transaction_id']}-n", user_id=loser)
           for t in simulate(10, 9, START + timedelta(days=3), 1).transactions]
    first = [("transactions", base.transactions, "a"), ("labels", base.labels, "a"), ("transactions", [copy], "a2")]
    then = [("transactions", new, "b")]
    views = load(etl_settings).views
    full = settings_under(etl_settings, "full")
    for contract, events, tag in first + then:
        land(full, contract, events, tag)
    run_batch(full, views=views)
    inc = settings_under(etl_settings, "inc")
    for contract, events, tag in first:
        land(inc, contract, events, tag)
    run_batch(inc, views=views)
    stored = LakeLayout.of(inc).retried_ids_path("transactions")
    assert pd.read_parquet(stored)["transaction_id"].tolist() == [copy["transaction_id"]]
    if index == "lost":
        stored.unlink()
    for contract, events, tag in then:
        land(inc, contract, events, tag)
    summary = run_batch(inc, views=views)
    assert summary["views"]["user_spend"]["mode"] == "entities" and summary["duplicates_dropped"]["transactions"] == 1
    assert summary["engine"] == "local"
    assert_same(tables(inc, views), tables(full, views))
    assert pd.read_parquet(stored)["transaction_id"].tolist() == [copy["transaction_id"]]


user = Entity("user", "user_id")
VIEW = WindowedView("inc_user", (user,), EventSource("transactions", "transactions", "event_time"), hop="1m",
                    aggregations=(A("count", "1h"), A("sum", "1d", "amount"), A("max", "1d", "amount"),
                                  A("distinct_count", "1d", "merchant_id", name="merchants_1d")))


COUNTS = WindowedView("inc_counts", (user,), EventSource("transactions", "transactions", "event_time"), hop="1m",
                      aggregations=(A("count", "1h"), A("count", "1d", name="n_1d")))


@pytest.mark.parametrize(("crash_after", "view"), [(0, VIEW), (1, VIEW), (1, COUNTS)])
def test_a_crash_in_the_merge_is_finished_by_the_next_run(etl_settings, monkeypatch, crash_after, view):
    """The run dies after committing its merge (before any swap, or after some): the next
    run completes the swaps, recomputes the same entities, and the table equals a full run's.
    A count view's new events were added before the crash: the next run, seeing the same new
    files, recomputes its entities instead of adding them twice."""
    VIEW = view  # noqa: N806
    base, new, full = base_and_new(etl_settings, days=3, new_day=2)
    land(full, "transactions", base.transactions, "a")
    land(full, "transactions", new.transactions, "b")
    run_batch(full, views=(VIEW,))
    want = tables(full, (VIEW,))

    land(etl_settings, "transactions", base.transactions, "a")
    run_batch(etl_settings, views=(VIEW,))
    land(etl_settings, "transactions", new.transactions, "b")
    calls = {"n": 0}
    real = incremental.os.replace

    def dying(src, dst):
        if str(dst).startswith(str(LakeLayout.of(etl_settings).features_dir(VIEW.name))):
            if calls["n"] >= crash_after:
                raise OSError("killed")
            calls["n"] += 1
        return real(src, dst)

    monkeypatch.setattr(incremental.os, "replace", dying)
    with pytest.raises(OSError, match="killed"):
        run_batch(etl_settings, views=(VIEW,))
    monkeypatch.setattr(incremental.os, "replace", real)
    stage = incremental.staging_dir(etl_settings, VIEW.name)
    assert (stage / incremental.JOURNAL).exists()  # committed, not applied

    again = run_batch(etl_settings, views=(VIEW,))
    assert again["by_entity"] == [VIEW.name] and not stage.exists()
    assert again["views"][VIEW.name]["mode"] == "entities"
    assert_same(tables(etl_settings, (VIEW,)), want)
    if VIEW is COUNTS:  # and the run after that adds again
        more = renamed(simulate(5, 11, START + timedelta(days=2), 1).transactions, "m")
        land(full, "transactions", more, "c")
        run_batch(full, start=START.date(), views=(VIEW,))
        land(etl_settings, "transactions", more, "c")
        assert run_batch(etl_settings, views=(VIEW,))["views"][VIEW.name]["mode"] == "additive"
        assert_same(tables(etl_settings, (VIEW,)), tables(full, (VIEW,)))


def test_an_incremental_run_with_an_end_keeps_the_watermark(etl_settings):
    """``etl run --end D`` after new events recomputes the output dates from the new events'
    date to D only: its rows before D are a full run's, the rows from D on are still the
    previous run's, so the run leaves the watermark where it was — and the next run without
    ``--end`` recomputes from the same date to the data's end: every row a full run's."""
    base, new, full = base_and_new(etl_settings, days=4, new_day=1)
    land(full, "transactions", base.transactions, "a")
    land(full, "transactions", new.transactions, "b")
    run_batch(full, views=(VIEW,))
    want = tables(full, (VIEW,))[VIEW.name]

    land(etl_settings, "transactions", base.transactions, "a")
    run_batch(etl_settings, views=(VIEW,))
    land(etl_settings, "transactions", new.transactions, "b")
    end = (START + timedelta(days=2)).date()
    cut = run_batch(etl_settings, end=end, views=(VIEW,))
    assert (cut["start"], cut["end"], cut["watermark_moved"]) == ((START + timedelta(days=1)).date().isoformat(),
                                                                  end.isoformat(), False)
    got = tables(etl_settings, (VIEW,))[VIEW.name]
    before = pd.Timestamp(end.isoformat(), tz="UTC")

    def until(df):
        return df[df["event_timestamp"] < before].reset_index(drop=True)

    pd.testing.assert_frame_equal(until(got), until(want), check_exact=True)
    assert not got.equals(want)  # the new events' 1-day windows close after the end: not written yet

    again = run_batch(etl_settings, views=(VIEW,))
    assert again["start"] == cut["start"] and again["watermark_moved"]
    assert_same(tables(etl_settings, (VIEW,)), {VIEW.name: want})
    assert run_batch(etl_settings, views=(VIEW,))["views"] == {}  # nothing new since
