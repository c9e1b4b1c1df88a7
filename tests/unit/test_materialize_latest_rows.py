"""The bounded materialization's first step: each entity's latest offline row in
[start, end] (Feast's semantics: both ends inclusive, the latest timestamp per join key),
found by DuckDB in a table of its own and streamed back in slices of entities."""

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pandas as pd
import pytest

from skewless.features.latest_rows import LatestRows
from skewless.settings import Settings

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
H = timedelta(hours=1)


def _view(path, keys=("user_id",), features=("count_1h", "sum_1h")):
    return SimpleNamespace(
        name="v", batch_source=SimpleNamespace(path=str(path), timestamp_field="event_timestamp"),
        entity_columns=[SimpleNamespace(name=k) for k in keys], features=[SimpleNamespace(name=f) for f in features])


def _write(path, rows):
    df = pd.DataFrame(rows, columns=["user_id", "count_1h", "sum_1h", "event_timestamp"])
    df["event_timestamp"] = pd.to_datetime(df["event_timestamp"], utc=True)
    for day, part in df.groupby(df.event_timestamp.dt.date):
        d = path / f"date={day}"
        d.mkdir(parents=True, exist_ok=True)
        part.to_parquet(d / "part-0.parquet", index=False)


def test_the_latest_row_per_entity_within_both_inclusive_ends(tmp_path):
    table = tmp_path / "features" / "v"
    _write(table, [
        ("a", 1, 1.0, T0 - H),          # before start: out
        ("a", 2, 2.0, T0),              # at start: in
        ("a", 3, 3.0, T0 + 30 * H),     # a's latest in range (another day, another file)
        ("b", 4, 4.0, T0 + 2 * H),
        ("b", 5, 5.0, T0 + 48 * H),     # exactly at end: in, b's latest
        ("c", 6, 6.0, T0 + 49 * H),     # after end: out (c has no row in range)
        ("a", 7, 7.0, T0 + 60 * H),     # after end: out
    ])
    with LatestRows(tmp_path / "tmp", "256MB") as latest:
        load = latest.prepare(_view(table), T0, T0 + 48 * H)
        assert (load.rows, load.keys) == (4, 2)
        got = latest.con.sql(f"SELECT * FROM {load.table} ORDER BY user_id").df()
        assert got.user_id.tolist() == ["a", "b"] and got.count_1h.tolist() == [3, 5]
        assert got.sum_1h.tolist() == [3.0, 5.0]
        assert pd.to_datetime(got.event_timestamp, utc=True).tolist() == [pd.Timestamp(T0 + 30 * H),
                                                                        pd.Timestamp(T0 + 48 * H)]
        # Streamed in slices of at most batch_rows entities, each entity once.
        batches = [b.num_rows for b in latest.con.sql(f"SELECT * FROM {load.table}").to_arrow_reader(1)]
        assert batches == [1, 1]
        spill = latest.dir
    assert not spill.exists()  # the database file and its spill are removed


def test_a_view_with_no_offline_table_yet_has_nothing_to_load(tmp_path):
    with LatestRows(tmp_path / "tmp", "256MB") as latest:
        load = latest.prepare(_view(tmp_path / "features" / "none"), T0, T0 + H)
        assert (load.rows, load.keys) == (0, 0)
        assert latest.write(None, None, load, 100) == 0


def test_the_bounds_are_settings():
    m = Settings().materialize
    assert (m.batch_rows, m.duckdb_memory) == (10_000, "1GB")
    assert Settings(materialize={"batch_rows": 500, "duckdb_memory": "512MB"}).materialize.batch_rows == 500
    for bad in ({"batch_rows": 10}, {"duckdb_memory": "lots"}):
        with pytest.raises(ValueError):
            Settings(materialize=bad)
