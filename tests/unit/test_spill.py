"""The prediction log's on-disk spill (serving/spill.py), and the log with Kafka away
(no broker needed: the bootstrap address is a closed port).

``tests/integration/test_prediction_log_outage.py`` replays spills into a real broker."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from serving.prediction_log import PredictionLog, spill_root
from serving.spill import LOCK_NAME, Spill, decode, encode
from skewless.services.server_process import free_port
from skewless.settings import Settings
from tests.isolation import with_overrides


def _lines(n: int, start: int = 0, uncertain: bool = False) -> list[bytes]:
    return [encode(1_700_000_000_000 + i, uncertain, f"r{i}", b'{"request_id":"r%d","pad":"%s"}' % (i, b"x" * 40))
            for i in range(start, start + n)]


def _replay_all(spill: Spill) -> list[str]:
    """Keys in replay order, removing each segment once read (as a full replay does)."""
    keys = []
    while (seg := spill.next_to_replay()) is not None:
        keys += [r.key for r in spill.read(seg)]
        spill.remove(seg)
    return keys


def test_a_record_round_trips_through_its_line_exactly():
    value = b'{"request_id":"a\\tb\\nc","score":0.1,"features":{"x":null}}'
    line = encode(123, True, "a\tb\nc", value)
    assert line.count(b"\n") == 1 and line.endswith(b"\n")
    rec = decode(line[:-1])
    assert (rec.ts, rec.uncertain, rec.key, rec.value) == (123, True, "a\tb\nc", value)


def test_records_replay_in_the_order_appended_across_segments(tmp_path):
    spill = Spill.create(tmp_path, max_bytes=10**6, segment_bytes=1000)
    assert spill.append(_lines(30)) == 30
    assert spill.append(_lines(20, start=30)) == 20
    assert len(spill.segments) > 3  # rolled many times
    assert spill.records == 50 and spill.bytes == sum(len(x) for x in _lines(50))
    assert _replay_all(spill) == [f"r{i}" for i in range(50)]
    assert spill.records == 0 and spill.bytes == 0
    spill.close()
    assert list(tmp_path.iterdir()) == []  # an empty spill leaves nothing behind


def test_new_records_queue_behind_a_segment_being_replayed(tmp_path):
    spill = Spill.create(tmp_path, max_bytes=10**6)
    spill.append(_lines(5))
    seg = spill.next_to_replay()  # seals the active segment: appends go to a new one
    spill.append(_lines(3, start=5))
    assert [r.key for r in spill.read(seg)] == [f"r{i}" for i in range(5)]
    spill.remove(seg)
    assert _replay_all(spill) == ["r5", "r6", "r7"]


def test_a_full_spill_takes_the_prefix_that_fits_and_refuses_the_rest(tmp_path):
    lines = _lines(10)
    spill = Spill.create(tmp_path, max_bytes=sum(len(x) for x in lines[:7]) + 5, segment_bytes=200)
    assert spill.append(lines) == 7
    assert spill.append(_lines(1, start=10)) == 0
    assert spill.records == 7
    seg = spill.next_to_replay()
    spill.read(seg)
    spill.remove(seg)  # replaying frees room
    assert spill.append(_lines(1, start=10)) == 1


def test_a_spill_with_no_room_at_all_takes_nothing(tmp_path):
    spill = Spill.create(tmp_path, max_bytes=0)
    assert spill.append(_lines(3)) == 0 and spill.records == 0


def test_a_spill_left_by_a_previous_process_is_adopted_with_its_marks(tmp_path):
    old = Spill.create(tmp_path, max_bytes=10**6, segment_bytes=1000)
    old.append(_lines(40))
    first = old.segments[0]
    old.mark(first)  # it died while replaying its first segment
    old.close()  # (a dead process's lock is free, as after close)
    assert old.directory.is_dir()  # records left: kept for the next process

    mine = Spill.create(tmp_path, max_bytes=10**6)
    [adopted] = Spill.adopt_orphans(tmp_path)
    assert adopted.directory == old.directory and adopted.records == 40
    seg = adopted.next_to_replay()
    assert adopted.is_marked(seg)  # some of these may already be in the topic
    assert not adopted.append(_lines(1))  # adopted spills are only replayed
    assert _replay_all(adopted) == [f"r{i}" for i in range(40)]
    adopted.close()
    assert not old.directory.exists()
    assert Spill.adopt_orphans(tmp_path) == []  # our own live spill is never adopted
    mine.close()


def test_a_spill_whose_owner_is_alive_is_not_adopted(tmp_path):
    live = Spill.create(tmp_path, max_bytes=10**6)
    live.append(_lines(3))
    live.sync(force=True)
    assert Spill.adopt_orphans(tmp_path) == []
    live.close()
    assert [s.records for s in Spill.adopt_orphans(tmp_path)] == [3]


def test_a_torn_last_line_is_skipped_and_counted(tmp_path):
    old = Spill.create(tmp_path, max_bytes=10**6)
    old.append(_lines(3))
    old.close()
    seg_path = next(old.directory.glob("*.seg"))
    with open(seg_path, "ab") as f:
        f.write(_lines(1, start=3)[0][:25])  # power lost mid-write
    [adopted] = Spill.adopt_orphans(tmp_path)
    seg = adopted.next_to_replay()
    assert [r.key for r in adopted.read(seg)] == ["r0", "r1", "r2"]
    assert adopted.unreadable == 1


def test_appends_are_written_through_as_they_arrive(tmp_path):
    """No buffering in the process: what append returned is in the file (a kill -9 of the
    server keeps it)."""
    spill = Spill.create(tmp_path, max_bytes=10**6)
    spill.append(_lines(2))
    data = b"".join(p.read_bytes() for p in spill.directory.glob("*.seg"))
    assert data == b"".join(_lines(2))
    assert (spill.directory / LOCK_NAME).exists()
    spill.close()


# -- the log with Kafka away ------------------------------------------------------------------
def _away(tmp_path: Path, **serving) -> Settings:
    return with_overrides(Settings(), state_dir=str(tmp_path),
                          kafka={"bootstrap_servers": [f"127.0.0.1:{free_port()}"]},
                          topics={"predictions": "pr-away"}, serving={"log_predictions": True, **serving})


def _record(i: int) -> dict:
    return {"request_id": f"req-{i}", "score": 0.5, "features": {"x": float(i)}}


@pytest.mark.timeout(60)
def test_with_kafka_away_predictions_wait_in_the_spill_for_the_next_start(tmp_path):
    settings = _away(tmp_path)
    log = PredictionLog(settings, retry_s=0.2)
    for i in range(200):
        assert log.submit(_record(i))
    log.close(timeout=2)
    assert (log.sent, log.dropped, log.spilled_records) == (0, 0, 200)

    # The next process (still without Kafka) adopts the spill and keeps it.
    again = PredictionLog(settings, retry_s=0.2)
    again.close(timeout=2)
    assert [s.records for s in again.adopted] == [200]
    left = [p for p in spill_root(settings).iterdir() if not p.name.startswith(".")]
    assert len(left) == 1  # the adopted one; the new process's empty spill removed itself
    keys = []
    [adopted] = Spill.adopt_orphans(spill_root(settings))
    while (seg := adopted.next_to_replay()) is not None:
        keys += [r.key for r in adopted.read(seg)]
        adopted.remove(seg)
    assert keys == [f"req-{i}" for i in range(200)]


@pytest.mark.timeout(60)
def test_when_even_the_spill_is_full_every_drop_is_counted_and_said(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="serving.prediction_log")
    one = len(encode(1_700_000_000_000, False, "req-0", b'{"request_id":"req-0","score":0.5,"features":{"x":0.0}}'))
    settings = _away(tmp_path, log_spill_max_bytes=one * 50)
    log = PredictionLog(settings, retry_s=0.2)
    for i in range(300):
        log.submit(_record(i))
    log.close(timeout=2)
    assert log.sent == 0
    assert log.spilled_records + log.dropped == 300
    assert 40 <= log.spilled_records <= 50 and log.dropped >= 250
    warnings = [r.getMessage() for r in caplog.records if "spill full" in r.getMessage()]
    assert warnings and f"({log.dropped} in all)" in warnings[-1]


def test_a_record_submitted_after_close_is_counted_as_dropped(tmp_path):
    log = PredictionLog(_away(tmp_path), retry_s=0.2)
    log.close(timeout=1)
    assert not log.submit(_record(0))
    assert log.dropped == 1


@pytest.mark.timeout(60)
def test_a_record_that_cannot_be_encoded_is_dropped_counted_and_the_log_goes_on(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="serving.prediction_log")
    log = PredictionLog(_away(tmp_path), retry_s=0.2)
    log.submit({"request_id": "bad", "features": {"x": object()}})
    for i in range(5):
        log.submit(_record(i))
    log.close(timeout=2)
    assert (log.dropped, log.spilled_records) == (1, 5)
    assert any("1 because they could not be encoded (TypeError)" in r.getMessage() for r in caplog.records)
