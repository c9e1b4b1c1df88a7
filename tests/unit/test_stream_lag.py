"""The streaming job's lag: records between what its last completed micro-batch read and
the newest offsets. From the batch's own progress alone it reads 0 while a long batch runs
(its newest offsets were taken when it was planned), so the job asks the broker."""

from etl.stream import _lag

PROGRESS = {"sources": [
    {"endOffset": '{"tx":{"0":100,"1":50}}', "latestOffset": '{"tx":{"0":100,"1":50}}'},
    {"endOffset": {"lb": {"0": 7}}, "latestOffset": {"lb": {"0": 9}}},
]}


def test_lag_from_the_last_batch_alone_is_what_it_saw_when_planned():
    assert _lag(PROGRESS) == 2  # lb/0: 9 - 7
    assert _lag(None) is None
    assert _lag({"sources": [{"endOffset": None, "latestOffset": '{"tx":{"0":1}}'}]}) is None


def test_lag_against_the_brokers_newest_offsets_counts_the_backlog_behind_a_running_batch():
    latest = {("tx", 0): 5100, ("tx", 1): 50, ("lb", 0): 9, ("lb", 1): 3}
    # tx/0 grew by 5,000 while the batch ran; lb/1 was never read (a new partition's records).
    assert _lag(PROGRESS, latest) == 5000 + 0 + 2 + 3


def test_caught_up_is_zero_and_never_negative():
    latest = {("tx", 0): 100, ("tx", 1): 40, ("lb", 0): 7}  # a broker answer older than the batch
    assert _lag(PROGRESS, latest) == 0
