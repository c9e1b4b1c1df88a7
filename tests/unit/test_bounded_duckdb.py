"""DuckDB in bounded memory (materialize's latest rows, the training set's ASOF joins): the
limit binds — a join whose working set is larger fails without its spill directory — and with
it the join completes, equal to an unbounded one; the directory goes away on close."""

from __future__ import annotations

import duckdb
import pytest
from pydantic import ValidationError

from skewless.bounded_duckdb import BoundedDuckDB
from skewless.settings import Settings

# 100k entity rows ASOF-joined onto 2M feature rows over 50k keys: far more than 64MB of work.
SETUP = [
    "CREATE TABLE f AS SELECT (i % 50000) AS k, (i // 50000) * 1000 + (hash(i) % 997)::BIGINT AS ts, "
    "random() AS v, repeat('x', 40) AS pad FROM range(2000000) t(i)",
    "CREATE TABLE e AS SELECT i AS row, (hash(i) % 50000)::BIGINT AS k, (hash(i * 7) % 40000)::BIGINT AS ts "
    "FROM range(100000) t(i)",
]
JOIN = "SELECT e.row, f.v, f.pad FROM e ASOF LEFT JOIN f ON e.k = f.k AND e.ts >= f.ts ORDER BY e.row"


def _load(con) -> None:
    con.execute("SELECT setseed(0.5)")
    for sql in SETUP:
        con.execute(sql)


def test_a_join_larger_than_the_limit_spills_and_equals_the_unbounded_join(tmp_path):
    plain = duckdb.connect()
    _load(plain)
    expected = plain.execute(JOIN).df()
    with BoundedDuckDB(tmp_path, "64MB", file_backed=True) as db:
        _load(db.con)
        db.con.execute("SET max_temp_directory_size = '0KB'")  # no spilling allowed: the limit must bite
        with pytest.raises(duckdb.OutOfMemoryException):
            db.con.execute(JOIN).df()
        db.con.execute("RESET max_temp_directory_size")
        got = db.con.execute(JOIN).df()
    assert len(got) == 100_000 and got["v"].notna().sum() > 90_000
    assert got.equals(expected)


def test_the_spill_directory_is_removed_on_close_and_on_error(tmp_path):
    with BoundedDuckDB(tmp_path, "64MB", prefix="t-") as db:
        assert db.dir.parent == tmp_path and db.dir.name.startswith("t-")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(duckdb.Error):
        with BoundedDuckDB(tmp_path, "64MB") as db:
            db.con.execute("SELECT * FROM no_such_table")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(duckdb.Error):
        BoundedDuckDB(tmp_path, "lots")  # refused by DuckDB: nothing left behind
    assert list(tmp_path.iterdir()) == []


def test_the_training_limit_is_a_setting_with_duckdbs_syntax():
    assert Settings().training.duckdb_memory == "1GB"
    assert Settings(training={"duckdb_memory": "512MB"}).training.duckdb_memory == "512MB"
    with pytest.raises(ValidationError):
        Settings(training={"duckdb_memory": "lots"})
