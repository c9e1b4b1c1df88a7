"""The declared feature-table checks (``skewless.features.checks``), on table profiles:
each fails on its bad figure, by name, and passes the good one."""

from __future__ import annotations

import pytest

from skewless.features.checks import evaluate, row_rules
from skewless.features.dsl import Aggregation as A
from skewless.features.dsl import Entity, EventSource, WindowedView

VIEW = WindowedView(
    "spend", (Entity("user", "user_id"),), EventSource("transactions", "transactions", "event_time"), hop="1m",
    aggregations=(A("count", "1h"), A("sum", "1h", "amount"), A("mean", "24h", "amount"),
                  A("distinct_count", "24h", "merchant_id", name="merchants_24h"), A("last_time", "24h", name="last")),
)
END = 1_772_409_600.0  # 2026-03-02T00:00Z


def good_profile() -> dict:
    p = {f"bad:{r.name}": 0 for r in row_rules(VIEW)}
    p.update(rows=30, events=10, events_in_range=10, newest_event=END - 7200, newest_row=END - 60, range_end=END)
    return p


def test_rules_are_derived_from_the_declaration():
    names = {r.name for r in row_rules(VIEW)}
    assert {"user_id.not_null", "event_timestamp.not_null", "count_1h.not_null", "count_1h.min", "sum_amount_1h.min",
            "mean_amount_24h.min", "mean_amount_24h.max", "merchants_24h.min", "last.min", "last.max"} <= names
    # A mean over an empty window is null by the DSL's semantics: no not_null rule for it.
    assert "mean_amount_24h.not_null" not in names
    bounds = {r.name: r.bound for r in row_rules(VIEW)}
    assert (bounds["mean_amount_24h.min"], bounds["mean_amount_24h.max"]) == (0.01, 1e6)  # amount's event check


def test_a_good_profile_passes():
    assert evaluate(VIEW, good_profile()) == []


@pytest.mark.parametrize("rule", [r.name for r in row_rules(VIEW)])
def test_each_row_rule_fails_with_its_count_when_rows_break_it(rule):
    p = good_profile()
    p[f"bad:{rule}"] = 3
    [failure] = evaluate(VIEW, p)
    assert (failure.check, failure.count) == (f"spend.{rule}", 3)


@pytest.mark.parametrize("changes,check", [
    ({"rows": 0}, "spend.rows_vs_events"),  # events in range, no row written
    ({"rows": 10 * 3 + 1}, "spend.rows_at_most"),  # 10 events x (1 + 2 distinct windows: 1h, 24h)
    ({"newest_row": END - 7200}, "spend.fresh"),  # the newest event's row is missing
])
def test_each_table_check_fails_by_name(changes, check):
    p = {**good_profile(), **changes}
    assert [f.check for f in evaluate(VIEW, p)] == [check]


def test_table_checks_hold_with_no_events():
    p = {**good_profile(), "rows": 0, "events": 0, "events_in_range": 0, "newest_event": None, "newest_row": None}
    assert evaluate(VIEW, p) == []
