"""The asof engine's joins (``training.pit_join.join_views``) filter each view to the keys
the entity rows have: the result is the same as joining every row — for one key and a key
pair, NULL keys, entity rows before a key's first row, ties — and the latest row at or
before each entity's time is the one joined."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from training.pit_join import ViewJoin, entity_frame, join_views


def _view(tmp_path, name: str, frame: pd.DataFrame) -> str:
    path = tmp_path / name
    path.mkdir()
    half = len(frame) // 2  # two files, as a lake has many
    pq.write_table(pa.Table.from_pandas(frame.iloc[:half], preserve_index=False), path / "a.parquet")
    pq.write_table(pa.Table.from_pandas(frame.iloc[half:], preserve_index=False), path / "b.parquet")
    return str(path)


def test_the_key_filter_changes_nothing_and_the_latest_row_at_or_before_is_joined(tmp_path):
    rng = np.random.default_rng(3)
    n, t0 = 4000, pd.Timestamp("2026-03-01", tz="UTC")
    users = np.array([f"u{i}" for i in rng.integers(0, 300, n)], dtype=object)
    users[::97] = None  # NULL keys in the view
    ts = t0 + pd.to_timedelta(rng.integers(0, 86400 * 10, n) // 60 * 60, unit="s")  # ties on the minute
    spend = pd.DataFrame({"user_id": users, "merchant_id": [f"m{i}" for i in rng.integers(0, 20, n)],
                          "event_timestamp": ts, "total": rng.normal(size=n), "count": rng.integers(0, 9, n)})
    spend = spend.drop_duplicates(["user_id", "merchant_id", "event_timestamp"])  # a view's rows are unique
    joins = [ViewJoin("user_spend", ("user_id",), ("total",), _view(tmp_path, "user_spend", spend)),
             ViewJoin("user_merchant", ("user_id", "merchant_id"), ("count",), _view(tmp_path, "pair", spend))]
    m = 600
    ent_users = np.array([f"u{i}" for i in rng.integers(0, 400, m)], dtype=object)  # some users the view lacks
    ent_users[::50] = None
    rows = entity_frame(pd.DataFrame({
        "user_id": ent_users, "merchant_id": [f"m{i}" for i in rng.integers(0, 20, m)],
        "event_timestamp": t0 + pd.to_timedelta(rng.integers(-86400, 86400 * 11, m), unit="s")}))

    filtered = join_views(duckdb.connect(), rows, joins)
    every_row = join_views(duckdb.connect(), rows, joins, key_filter=False)
    pd.testing.assert_frame_equal(filtered, every_row)

    # And against the definition, row by row, for the pair-keyed view.
    got = filtered.set_index("_row")["user_merchant__count"]
    for r in rows.to_dict("records"):
        hist = spend[(spend.user_id == r["user_id"]) & (spend.merchant_id == r["merchant_id"])
                     & (spend.event_timestamp <= r["event_timestamp"])] if r["user_id"] is not None else spend.iloc[:0]
        want = hist.sort_values("event_timestamp")["count"].iloc[-1] if len(hist) else None
        if want is None:
            assert pd.isna(got[r["_row"]]), r
        else:
            assert got[r["_row"]] == want, r
    assert got.notna().sum() > m // 10 and got.isna().sum() > m // 10  # both cases occur
