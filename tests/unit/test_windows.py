"""The window code both the batch and the streaming job run (``etl.windows``): partials
merge like the union of their events (what lets the stream add a micro-batch — late
events included — to stored partials), survive the stream's state blobs unchanged, and
give the rows a brute-force computation of the semantics gives."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from hypothesis import given, settings, strategies as st

from etl import windows
from etl.stream_state import decode_blobs, encode_blobs
from skewless.features.dsl import Aggregation as A
from skewless.features.dsl import Entity, EventSource, WindowedView

T0 = 1_780_000_000.0
VIEW = WindowedView("w", (Entity("user", "user_id"),), EventSource("t", "transactions", "event_time"), hop="2s",
                    aggregations=(A("count", "4s"), A("sum", "10s", "amount"), A("mean", "4s", "amount"),
                                  A("min", "10s", "amount"), A("max", "4s", "amount"),
                                  A("distinct_count", "10s", "merchant_id", name="m10"),
                                  A("last", "10s", "country", name="last_country", dtype="string"),
                                  A("last_time", "10s", name="lt")))

event = st.fixed_dictionaries({
    "user_id": st.sampled_from(["a", "b", "c"]),
    "t": st.integers(0, 60).map(lambda s: s / 2) | st.floats(0, 30, allow_nan=False),
    "amount": st.sampled_from([0.01, 0.1, 2.5, 99.99, 1e6, 33.333333333]),
    "merchant_id": st.sampled_from(["m1", "m2", "m3"]),
    "country": st.sampled_from(["DE", "FR", "US"]),
})


def frame(evs: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(evs, columns=["user_id", "t", "amount", "merchant_id", "country"])
    df["_ts"] = pd.to_datetime(T0 + df["t"], unit="s", utc=True)
    # Event times have microsecond resolution (the contract's): two times that round to the
    # same microsecond are a tie, broken by the greatest value, for the brute force too.
    df["t"] = (df["_ts"].astype("datetime64[us, UTC]").astype("int64") - T0 * 1_000_000) / 1e6
    return df


def brute(df: pd.DataFrame, user: str, t: float) -> dict:
    b = math.floor(t / 2) * 2
    out = {}
    ev = df[df.user_id == user]
    for a in VIEW.aggregations:
        w = a.window_td.total_seconds()
        e = ev[(T0 + ev.t >= b - w) & (T0 + ev.t < b)].sort_values(["t", "country"])
        f = a.function
        out[a.feature_name] = (
            len(e) if f == "count" else float(sum(e.amount)) if f == "sum" else
            (float(e.amount.mean()) if len(e) else None) if f == "mean" else
            (float(e.amount.min()) if len(e) else None) if f == "min" else
            (float(e.amount.max()) if len(e) else None) if f == "max" else
            int(e.merchant_id.nunique()) if f == "distinct_count" else
            (e.country.iloc[-1] if len(e) else None) if f == "last" else
            (T0 + float(e.t.iloc[-1]) if len(e) else None))
    return out


def same(a, b) -> bool:
    a = None if a is None or (isinstance(a, float) and math.isnan(a)) else a
    b = None if b is None or (isinstance(b, float) and math.isnan(b)) else b
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b


@settings(max_examples=80, deadline=None)
@given(st.lists(event, min_size=1, max_size=40), st.lists(st.floats(-2, 50, allow_nan=False), min_size=1, max_size=12))
def test_rows_equal_brute_force_at_any_instant(evs, queries):
    df = frame(evs)
    rows = windows.events_rows(VIEW, df)
    for user in df.user_id.unique():
        for q in queries:
            t = T0 + q
            mine = rows[(rows.user_id == user) & (rows[windows.TS] <= pd.Timestamp(t, unit="s", tz="UTC"))]
            want = brute(df, user, t)
            if not (T0 + df[df.user_id == user].t < math.floor(t / 2) * 2).any():
                assert mine.empty  # before the first event's boundary: no row
                continue
            got = mine.iloc[-1]
            for name, value in want.items():
                g = got[name]
                assert same(value, g.item() if hasattr(g, "item") else g), (user, q, name, value, g)


@settings(max_examples=80, deadline=None)
@given(st.lists(event, min_size=1, max_size=40), st.data())
def test_merged_partials_of_parts_are_the_partials_of_the_whole(evs, data):
    df = frame(evs)
    part = np.array(data.draw(st.lists(st.booleans(), min_size=len(df), max_size=len(df))), dtype=bool)
    whole = windows.bucket_partials(VIEW, df)
    pieces = [windows.bucket_partials(VIEW, df[m]) for m in (part, ~part) if m.any()]
    merged = windows.merge_partials(VIEW, pd.concat(pieces, ignore_index=True))
    pd.testing.assert_frame_equal(merged.reset_index(drop=True), whole.reset_index(drop=True), check_dtype=False)
    # As the stream merges: the rows' entity codes given (its stored buckets, then the new
    # ones), so the keys' text is not sorted again.
    cols = {c: whole[c].to_numpy() for c in whole}  # (tuples for sets)
    both = windows.concat([{c: windows.Sets.of(piece[c]) if c.startswith("_set_") else piece[c].to_numpy()
                            for c in piece} for piece in pieces])
    users = np.asarray(both["user_id"], dtype=object)
    codes = np.searchsorted(np.unique(users.astype(str)), users.astype(str)).astype("int64")
    fast = windows.frame(windows.merge_columns(VIEW, both, entity_codes=codes))
    pd.testing.assert_frame_equal(fast.reset_index(drop=True), windows.frame(
        {c: windows.Sets.of(v) if c.startswith("_set_") else v for c, v in cols.items()}).reset_index(drop=True),
        check_dtype=False)


@settings(max_examples=40, deadline=None)
@given(st.lists(event, min_size=1, max_size=30))
def test_partials_survive_the_streams_json_state(evs):
    p = windows.bucket_partials(VIEW, frame(evs))
    blobs = encode_blobs(VIEW, p)
    assert len(blobs) == p["user_id"].nunique()
    back = decode_blobs(VIEW, list(blobs), list(blobs.values()))
    back = back.sort_values(["user_id", "_k"], kind="mergesort").reset_index(drop=True)
    pd.testing.assert_frame_equal(back, p.reset_index(drop=True), check_dtype=False)
    assert windows.view_rows(VIEW, back).equals(windows.view_rows(VIEW, p.reset_index(drop=True)))


@settings(max_examples=60, deadline=None)
@given(st.lists(event, min_size=1, max_size=30), st.integers(-2, 30))
def test_rows_at_a_boundary_are_view_rows_probed_there(evs, b_rel):
    """What the stream publishes at a boundary (``rows_at``, ``next_change``, on partials as the
    stream stores them: grouped by entity in the order its state hands them over) equals
    ``view_rows`` probed at that boundary and the first change point after it."""
    p = windows.bucket_partials(VIEW, frame(evs))
    blobs = encode_blobs(VIEW, p)
    ids = list(blobs)[::-1]  # not the sorted order
    stored = decode_blobs(VIEW, ids, [blobs[e] for e in ids])
    b = int(T0 * 1_000_000) // windows.hop_us(VIEW) + b_rel
    want = windows.view_rows(VIEW, stored, since_b=b, until_b=b + 1,
                             probes=stored[["user_id"]].drop_duplicates().assign(_b=b))
    got = windows.rows_at(VIEW, stored, b)
    pd.testing.assert_frame_equal(got.sort_values("user_id").reset_index(drop=True),
                                  want.sort_values("user_id").reset_index(drop=True), check_exact=True)
    cps = windows.change_points(VIEW, stored)
    first = np.where(cps > b, cps, np.iinfo("int64").max).min(axis=1)
    by_user = stored[["user_id"]].assign(_next=first).groupby("user_id")["_next"].min()
    by_user = by_user[by_user < np.iinfo("int64").max]
    nxt = windows.next_change(VIEW, stored, b)
    assert dict(zip(nxt["user_id"], nxt["_next"])) == by_user.to_dict()


@settings(max_examples=20, deadline=None)
@given(st.lists(event, min_size=1, max_size=20))
def test_a_state_blob_of_the_former_json_layout_still_reads(evs):
    """A job restarted on a state written before the packed blobs reads its JSON blobs (one
    column list each, sums as decimal strings, sets as lists) as the same partials."""
    import orjson

    p = windows.bucket_partials(VIEW, frame(evs))
    ids, old = [], []
    for user, g in p.groupby("user_id", sort=True):
        cols = {}
        for name in ["_k"] + windows.partial_names(VIEW):
            v = g[name].tolist()
            if name.startswith("_sum_"):
                v = [str(int(x)) for x in v]
            elif name.startswith("_set_"):
                v = [list(x) for x in v]
            elif name.startswith(("_min_", "_max_")):
                v = [None if x != x else x for x in v]
            cols[name] = v
        ids.append(f'["{user}"]')
        old.append(orjson.dumps(cols))
    back = decode_blobs(VIEW, ids, old).sort_values(["user_id", "_k"], kind="mergesort").reset_index(drop=True)
    pd.testing.assert_frame_equal(back, p.reset_index(drop=True), check_dtype=False)


COUNTS = WindowedView("c", (Entity("user", "user_id"),), EventSource("t", "transactions", "event_time"), hop="2s",
                      aggregations=(A("count", "4s"), A("count", "10s", name="n10")))
NUMERIC = WindowedView("n", (Entity("user", "user_id"), Entity("merchant", "merchant_id")),
                       EventSource("t", "transactions", "event_time"), hop="2s",
                       aggregations=(A("count", "4s"), A("sum", "10s", "amount"), A("max", "4s", "amount"),
                                     A("last_time", "10s", name="lt")))


@settings(max_examples=40, deadline=None)
@given(st.lists(event, min_size=1, max_size=30))
def test_numeric_partials_survive_the_streams_state(evs):
    """A view without last values or sets: its blobs are laid out for all entities at once
    (``_numeric_blobs``); each is its head and its rows' records, and reads back unchanged."""
    import struct

    p = windows.bucket_partials(NUMERIC, frame(evs))
    blobs = encode_blobs(NUMERIC, p)
    assert len(blobs) == len(p[["user_id", "merchant_id"]].drop_duplicates())
    for blob in blobs.values():
        tag, rows, extra = struct.unpack("<BII", blob[:9])
        assert tag == 1 and extra == 0 and rows >= 1 and (len(blob) - 9) % rows == 0
    ids = list(blobs)[::-1]
    back = decode_blobs(NUMERIC, ids, [blobs[e] for e in ids])
    back = back.sort_values(["user_id", "merchant_id", "_k"], kind="mergesort").reset_index(drop=True)
    want = p.sort_values(["user_id", "merchant_id", "_k"], kind="mergesort").reset_index(drop=True)
    pd.testing.assert_frame_equal(back, want, check_dtype=False)


@settings(max_examples=150, deadline=None)
@given(st.lists(event, min_size=1, max_size=25), st.lists(event, min_size=0, max_size=10), st.integers(0, 40))
def test_added_rows_equal_the_rows_of_the_union(old_events, new_events, cut):
    """An incremental run's additive path (count-only views): from some boundary on, the
    union's rows are the old rows (with each entity's latest row before it) plus the new
    events' rows — the very rows ``events_rows`` gives the union."""
    assert windows.additive(COUNTS) and not windows.additive(VIEW)
    old, new = frame(old_events), frame(new_events)
    since_b = int(T0 // 2) + cut // 2
    new = new[new["_ts"] >= pd.Timestamp(since_b * 2, unit="s", tz="UTC")]  # new events from the cut on
    union = pd.concat([old, new], ignore_index=True) if len(new) else old
    want = windows.events_rows(COUNTS, union, since_b=since_b).sort_values(["user_id", windows.TS])
    every_old = windows.events_rows(COUNTS, old)
    t_b = windows.micros(every_old[windows.TS]) // windows.hop_us(COUNTS)
    before = every_old[t_b < since_b].groupby("user_id").tail(1)  # the value each entity holds at the cut
    got = windows.add_rows(COUNTS, pd.concat([before, every_old[t_b >= since_b]]),
                           windows.events_rows(COUNTS, new, since_b=since_b))
    got = got[windows.micros(got[windows.TS]) // windows.hop_us(COUNTS) >= since_b]
    pd.testing.assert_frame_equal(got.sort_values(["user_id", windows.TS]).reset_index(drop=True),
                                  want.reset_index(drop=True), check_exact=True)


SELECTS = WindowedView("s", (Entity("user", "user_id"),), EventSource("t", "transactions", "event_time"), hop="2s",
                       aggregations=(A("distinct_count", "4s", "merchant_id", name="m4"),
                                     A("distinct_count", "10s", "country", name="c10"),
                                     A("last", "10s", "country", name="last_country", dtype="string"),
                                     A("last_time", "20s", name="lt")))


def _columns_of(view, df) -> dict:
    return {c: windows.Sets.of(v) if c.startswith("_set_") else v.to_numpy()
            for c, v in windows.bucket_partials(view, df).items()}


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([VIEW, SELECTS]), st.lists(event, min_size=1, max_size=40),
       st.lists(event, min_size=0, max_size=10), st.integers(0, 32))
def test_forgetting_dominated_partials_changes_no_row_from_then_on(view, evs, later, cut):
    """The stream forgets what no coming row reads (``forget_dominated``): at every boundary
    from the cut on, the rows of the pruned partials equal those of the whole — also after
    more events (late ones included, in buckets already pruned) are merged into them."""
    from_b = int(T0 // 2) + cut // 2
    df, more = frame(evs), frame(later)
    whole = windows.merge_columns(view, _columns_of(view, pd.concat([df, more], ignore_index=True) if len(more) else df))
    pruned = windows.forget_dominated(view, _columns_of(view, df), from_b)
    if len(more):
        pruned = windows.merge_columns(view, windows.concat([pruned, _columns_of(view, more)]))
    assert windows.nrows(pruned) <= windows.nrows(whole)
    for b in range(from_b, from_b + 16):
        want = windows.rows_at(view, whole, b)
        got = windows.rows_at(view, pruned, b)
        pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True), check_exact=True)
    if view is SELECTS:
        # it does forget: a user's settled buckets keep each distinct value once
        p = windows.forget_dominated(view, _columns_of(view, df), 10**12)
        for name in ("_set_m4", "_set_c10"):
            sets = p[name]
            pairs = list(zip(np.repeat(p["user_id"], sets.lens), sets.values))
            assert len(pairs) == len(set(pairs))
