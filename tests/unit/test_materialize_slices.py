"""The time slices a materialization is cut into: they cover [start, end] exactly, in order,
each within the row budget unless one hour alone exceeds it (hours are never split)."""

from datetime import datetime, timedelta, timezone

import pytest

from skewless.features.slices import plan
from skewless.settings import Settings

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
H = timedelta(hours=1)


def _check_cover(slices, start, end):
    assert slices[0].start == start and slices[-1].end == end
    for a, b in zip(slices, slices[1:]):
        assert a.end == b.start and a.start < a.end


def test_slices_cover_the_range_in_order_and_keep_within_the_budget():
    counts = [(T0 + i * H, n) for i, n in enumerate([400, 300, 500, 100, 100, 900, 50])]
    start, end = T0, T0 + 10 * H
    slices = plan(counts, start, end, max_rows=1000)
    _check_cover(slices, start, end)
    assert [s.rows for s in slices] == [700, 700, 950]
    assert [s.start for s in slices] == [T0, T0 + 2 * H, T0 + 5 * H]
    assert sum(s.rows for s in slices) == sum(n for _, n in counts)


def test_an_hour_over_the_budget_is_a_slice_of_its_own():
    counts = [(T0, 10), (T0 + H, 5000), (T0 + 2 * H, 10)]
    slices = plan(counts, T0, T0 + 3 * H, max_rows=1000)
    _check_cover(slices, T0, T0 + 3 * H)
    assert [s.rows for s in slices] == [10, 5000, 10]


def test_one_slice_when_everything_fits_or_nothing_is_there():
    start, end = T0 + timedelta(minutes=30), T0 + 5 * H
    # The first hour starts before `start` (date_trunc): never a cut before the range.
    counts = [(T0, 600), (T0 + H, 600)]
    assert [(s.start, s.end, s.rows) for s in plan(counts, start, end, 10_000)] == [(start, end, 1200)]
    assert [(s.start, s.end, s.rows) for s in plan([], start, end, 10)] == [(start, end, 0)]
    two = plan(counts, start, end, 1000)
    assert [(s.start, s.end) for s in two] == [(start, T0 + H), (T0 + H, end)]


def test_a_cut_is_never_at_the_end_and_the_budget_must_be_positive():
    end = T0 + 2 * H
    counts = [(T0, 900), (T0 + H, 900), (end, 900)]  # a row exactly at `end` counts into the end's hour
    slices = plan(counts, T0, end, 1000)
    _check_cover(slices, T0, end)
    assert [s.rows for s in slices] == [900, 1800]
    with pytest.raises(ValueError):
        plan(counts, T0, end, 0)


def test_the_slice_size_is_a_setting_with_a_bounded_default():
    assert Settings().materialize.slice_rows == 1_000_000
    assert Settings(materialize={"slice_rows": 50_000}).materialize.slice_rows == 50_000
    with pytest.raises(ValueError):
        Settings(materialize={"slice_rows": 10})
