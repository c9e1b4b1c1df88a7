"""``PartitionBatch.add_records``: the sink's per-poll loop stops exactly where the batch
fills (records, bytes, event dates), and ``take`` hands a full batch over to be landed
while the partition's batch starts empty; every offset lands once, in order."""

from __future__ import annotations

from types import SimpleNamespace

import orjson
import pyarrow.parquet as pq
import pytest

from ingestion.batch import PartitionBatch, Record
from skewless.contracts import TRANSACTIONS
from skewless.lake_layout import LakeLayout

KAFKA_TS = 4_102_444_800_000  # 2100-01-01: no event time in range is ahead of it


def _tx(i: int, day: int) -> bytes:
    return orjson.dumps({"transaction_id": f"t{i}", "user_id": "u1", "merchant_id": "m1", "amount": 1.5 + i,
                         "currency": "EUR", "country": "DE", "channel": "web", "device_id": "d1",
                         "event_time": f"2026-01-{day:02d}T10:00:{i % 60:02d}Z"})


def _limits(**kw) -> SimpleNamespace:
    base = dict(flush_records=10**9, flush_bytes=10**12, max_dates_per_batch=10**6, compression="zstd",
                row_group_records=1000)
    return SimpleNamespace(**{**base, **kw})


def _land_all(records: list[Record], limits: SimpleNamespace, tmp_path) -> tuple[list[tuple[int, int]], list[int]]:
    """Feed ``records`` the way the sink does; land each full batch (and the rest) from ``take``.
    Returns each batch's (first, last) offsets and every offset found in the files."""
    layout = LakeLayout(tmp_path)
    batch = PartitionBatch(TRANSACTIONS.name, 0, TRANSACTIONS, limits)
    ranges, found = [], []
    i = 0
    while i < len(records):
        i = batch.add_records(records, i)
        if batch.full() or i == len(records):
            closed = batch.take()
            assert len(batch) == 0 and batch.first is None and not batch.dates and not batch.raw
            br, moves, counts = closed.write_temp_files(layout)
            assert counts["records"] == br.last - br.first + 1
            ranges.append((br.first, br.last))
            for tmp, _final in moves:
                table = pq.read_table(tmp)
                found += table.column("_kafka_offset" if "_kafka_offset" in table.column_names else "offset").to_pylist()
    return ranges, sorted(found)


def test_a_batch_closes_at_flush_records_exactly(tmp_path):
    records = [Record(o, None, _tx(o, 1 + o % 3), KAFKA_TS) for o in range(30)]
    records[9] = Record(9, None, b"{not json", KAFKA_TS)  # a dead letter counts as a record too
    ranges, found = _land_all(records, _limits(flush_records=7), tmp_path)
    assert ranges == [(0, 6), (7, 13), (14, 20), (21, 27), (28, 29)]
    assert found == list(range(30))


def test_a_batch_closes_at_the_record_that_reaches_max_dates(tmp_path):
    days = [1, 1, 2, 2, 3, 1, 4, 4, 5]
    records = [Record(o, None, _tx(o, d), KAFKA_TS) for o, d in enumerate(days)]
    ranges, found = _land_all(records, _limits(max_dates_per_batch=2), tmp_path)
    assert ranges == [(0, 2), (3, 4), (5, 6), (7, 8)]  # closes on the record bringing the 2nd date
    assert found == list(range(len(days)))


def test_a_batch_closes_at_flush_bytes(tmp_path):
    records = [Record(o, None, _tx(o, 1), KAFKA_TS) for o in range(10)]
    size = len(records[0].value)
    ranges, found = _land_all(records, _limits(flush_bytes=max(1024, 3 * size)), tmp_path)
    per = -(-max(1024, 3 * size) // size)  # records until the bytes reach the limit
    assert ranges[0] == (0, per - 1)
    assert found == list(range(10))


@pytest.mark.parametrize("start", [0, 3])
def test_add_records_starts_where_asked_and_adds_nothing_past_the_end(start):
    records = [Record(o, None, _tx(o, 1), KAFKA_TS) for o in range(5)]
    batch = PartitionBatch(TRANSACTIONS.name, 0, TRANSACTIONS, _limits())
    assert batch.add_records(records, start) == 5
    assert (batch.first, batch.last, len(batch)) == (start, 4, 5 - start)
    assert batch.add_records(records, 5) == 5 and len(batch) == 5 - start


def test_each_date_file_holds_its_rows_sorted_with_the_optional_columns_they_have(tmp_path):
    """Out of order: dates interleaved, times descending; only day 2's events carry ``mcc``;
    day 4's only event fails a batch check (a channel not allowed)."""
    events = []
    for o in range(40):
        day = 1 + o % 3
        event = orjson.loads(_tx(o, day))
        event["event_time"] = f"2026-01-{day:02d}T{23 - o // 3:02d}:00:00Z"  # later offsets, earlier times
        if day == 2:
            event["mcc"] = "5411"
        events.append(event)
    events.append({**orjson.loads(_tx(40, 4)), "channel": "fax"})
    layout = LakeLayout(tmp_path)
    batch = PartitionBatch(TRANSACTIONS.name, 0, TRANSACTIONS, _limits())
    batch.add_records([Record(o, None, orjson.dumps(e), KAFKA_TS) for o, e in enumerate(events)])
    _, moves, counts = batch.take().write_temp_files(layout)
    assert counts == {"records": 41, "valid": 40, "dead_lettered": 1}
    dead = layout.dead_letter_dir(TRANSACTIONS.name)
    assert [final.parent for _, final in moves if final.parent == dead] == [dead]
    files = {final.parent.name: pq.read_table(tmp) for tmp, final in moves if final.parent != dead}
    assert sorted(files) == ["date=2026-01-01", "date=2026-01-02", "date=2026-01-03"]  # none for day 4
    for day in (1, 2, 3):
        table = files[f"date=2026-01-{day:02d}"]
        expected = TRANSACTIONS.arrow_schema({"mcc"} if day == 2 else set())
        assert table.schema.equals(expected, check_metadata=False), (day, table.schema)
        rows = table.to_pylist()
        assert [r["_kafka_offset"] % 3 for r in rows] == [day - 1] * len(rows)
        keys = [(r["event_time"], r["_kafka_offset"]) for r in rows]
        assert keys == sorted(keys)
        assert {r["_kafka_partition"] for r in rows} == {0}
