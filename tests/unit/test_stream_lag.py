"""The streaming job's lag and where it starts reading: both come from the offsets its state
committed with its last micro-batch (not from Spark's progress, which reads 0 while a long
batch runs and knows nothing of what a killed run applied)."""

import json

from etl.stream import _lag, _starting_offsets

APPLIED = {("tx", 0): 100, ("tx", 1): 50, ("lb", 0): 7}


def test_lag_counts_what_the_state_has_not_applied_including_partitions_it_never_read():
    latest = {("tx", 0): 5100, ("tx", 1): 50, ("lb", 0): 9, ("lb", 1): 3}
    assert _lag(latest, APPLIED) == 5000 + 0 + 2 + 3
    assert _lag(latest, None) == 5100 + 50 + 9 + 3  # nothing applied yet


def test_caught_up_is_zero_never_negative_and_unknown_without_the_broker():
    assert _lag({("tx", 0): 100, ("tx", 1): 40, ("lb", 0): 7}, APPLIED) == 0  # an answer older than the state
    assert _lag(None, APPLIED) is None


def test_spark_starts_every_partition_at_the_states_offset_or_the_earliest():
    ends = {("tx", 0): 120, ("tx", 1): 60, ("lb", 0): 9, ("lb", 1): 3, ("other", 0): 5}
    got = json.loads(_starting_offsets(["tx", "lb"], ends, APPLIED))
    # Spark wants every partition of a subscribed topic named; -2 is its "earliest".
    assert got == {"tx": {"0": 100, "1": 50}, "lb": {"0": 7, "1": -2}}
