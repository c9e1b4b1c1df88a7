"""The lake's commit protocol and its recovery, driven step by step on a temp directory.

A crash can stop the protocol between any two steps; ``recover_partition`` must then leave
the lake as if the batch either landed completely (its manifest exists) or never started.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import orjson
import pyarrow.dataset as ds
import pytest

from ingestion.batch import PartitionBatch
from ingestion.lake_files import recover_partition, roll_forward, write_manifest
from skewless.errors import ConfigError, DataError
from skewless.lake_layout import TMP_PREFIX, BatchRange, LakeLayout
from ingestion.simulator import bad_messages, simulate
from skewless.contracts import TRANSACTIONS
from skewless.settings import IngestSettings

START = datetime(2026, 1, 1, tzinfo=timezone.utc)
TOPIC = "tx"
EVENTS = simulate(200, 1, START, 3).transactions  # three days: several date directories


def fill(first: int, count: int, partition: int = 0, bad_every: int = 0) -> PartitionBatch:
    batch = PartitionBatch(TOPIC, partition, TRANSACTIONS, IngestSettings())
    bad = [raw for _, raw in bad_messages(count, 3)]
    for i in range(count):
        event = EVENTS[(first + i) % len(EVENTS)]
        value = bad[i] if bad_every and i % bad_every == 0 else orjson.dumps(event)
        batch.add(first + i, event["user_id"].encode(), value, 1_000)  # the key is the user, as the contract says
    return batch


def land_until(layout: LakeLayout, batch: PartitionBatch, step: str):
    """Run the commit protocol for ``batch`` and stop (as a crash would) before ``step``."""
    br, moves, counts = batch.write_temp_files(layout)
    if step == "manifest":
        return br, moves, None
    manifest = write_manifest(layout, br, moves, counts)
    if step == "rename":
        return br, moves, manifest
    roll_forward(layout, manifest)
    return br, moves, manifest


def lake_state(layout: LakeLayout) -> dict[str, bytes]:
    return {str(p.relative_to(layout.root)): p.read_bytes() for p in layout.root.rglob("*") if p.is_file()}


def visible_offsets(layout: LakeLayout) -> list[int]:
    raw = layout.raw_dir(TOPIC)
    if not raw.exists():
        return []
    return sorted(ds.dataset(str(raw), format="parquet", partitioning="hive").to_table()
                  .column("_kafka_offset").to_pylist())


@pytest.fixture
def layout(tmp_path):
    return LakeLayout(tmp_path / "lake")


def test_names_are_deterministic_and_hold_topic_partition_and_range(layout):
    br = BatchRange(TOPIC, 3, 5, 120)
    assert br.stem == "tx+3+00000000000000000005-00000000000000000120"
    assert layout.manifest_path(br).name == "00000000000000000005-00000000000000000120.json"
    # A replay of the same offsets writes the same file names.
    _, moves_a, _ = land_until(layout, fill(0, 50, partition=3), "manifest")
    for tmp, _ in moves_a:
        tmp.unlink()
    _, moves_b, _ = land_until(layout, fill(0, 50, partition=3), "manifest")
    assert [f for _, f in moves_a] == [f for _, f in moves_b]
    assert all(t.name.startswith(TMP_PREFIX) and t.parent == f.parent for t, f in moves_b)
    with pytest.raises(ConfigError, match="must be local"):
        LakeLayout("s3://bucket/lake")


def test_full_protocol_lands_rows_by_date_and_dead_letters(layout):
    br, moves, manifest = land_until(layout, fill(0, 100, bad_every=10), "done")
    assert (br.first, br.last) == (0, 99)
    body = json.loads(manifest.read_text())
    assert (body["records"], body["valid"], body["dead_lettered"]) == (100, 90, 10)
    assert len({f.parent for _, f in moves}) > 2  # several dates and the dead-letter dir
    assert all(f.exists() and not t.exists() for t, f in moves)
    assert visible_offsets(layout) == [i for i in range(100) if i % 10]
    assert layout.landed_end(TOPIC, 0) == 99
    assert recover_partition(layout, TOPIC, 0) == {"rolled_forward": 0, "temp_files_removed": 0, "landed_end": 99}


def test_recovery_rolls_forward_a_manifest_whose_temp_files_remain(layout):
    land_until(layout, fill(0, 40), "done")
    br, moves, manifest = land_until(layout, fill(40, 60, bad_every=7), "rename")  # crash before the renames
    assert visible_offsets(layout) == list(range(40))  # readers do not see the temp files
    info = recover_partition(layout, TOPIC, 0)
    assert info == {"rolled_forward": len(moves), "temp_files_removed": 0, "landed_end": 99}
    assert all(f.exists() and not t.exists() for t, f in moves)
    assert visible_offsets(layout) == [i for i in range(100) if not (40 <= i and (i - 40) % 7 == 0)]


def test_recovery_finishes_a_half_done_rename(layout):
    br, moves, manifest = land_until(layout, fill(0, 80, bad_every=9), "rename")
    assert len(moves) > 2
    done_tmp, done_final = moves[0]
    done_tmp.rename(done_final)  # the crash came in the middle of step 3
    info = recover_partition(layout, TOPIC, 0)
    assert info["rolled_forward"] == len(moves) - 1 and info["landed_end"] == 79
    assert all(f.exists() and not t.exists() for t, f in moves)
    assert not list(layout.root.rglob(f"{TMP_PREFIX}*"))


def test_recovery_deletes_orphan_temp_files_of_an_unlanded_batch(layout):
    land_until(layout, fill(0, 30), "done")
    landed = lake_state(layout)
    _, moves, _ = land_until(layout, fill(30, 50, bad_every=5), "manifest")  # crash before the manifest
    # ... and a half-written manifest too.
    layout.manifest_path(BatchRange(TOPIC, 0, 30, 79)).with_name(TMP_PREFIX + "x.json").write_text("{")
    info = recover_partition(layout, TOPIC, 0)
    assert info == {"rolled_forward": 0, "temp_files_removed": len(moves) + 1, "landed_end": 29}
    assert lake_state(layout) == landed  # back to exactly what had landed
    assert visible_offsets(layout) == list(range(30))


def test_recovery_of_an_empty_partition_and_of_other_partitions(layout):
    assert recover_partition(layout, TOPIC, 0) == {"rolled_forward": 0, "temp_files_removed": 0, "landed_end": None}
    assert layout.landed_end(TOPIC, 0) is None
    _, moves_p1, _ = land_until(layout, fill(0, 20, partition=1), "manifest")  # partition 1's own temp files
    _, moves_p10, _ = land_until(layout, fill(0, 20, partition=10), "manifest")
    land_until(layout, fill(0, 20, partition=0), "manifest")
    info = recover_partition(layout, TOPIC, 0)
    assert info["landed_end"] is None and info["temp_files_removed"] > 0
    # Partition 0's recovery touches neither partition 1's nor partition 10's files.
    assert all(t.exists() for t, _ in moves_p1 + moves_p10)
    assert recover_partition(layout, TOPIC, 1)["temp_files_removed"] == len(moves_p1)
    assert all(t.exists() for t, _ in moves_p10)


def test_recovery_is_idempotent_and_landed_end_is_the_newest_batch(layout):
    for first, count in ((0, 10), (10, 90), (100, 5)):
        land_until(layout, fill(first, count), "done")
    land_until(layout, fill(105, 20), "rename")
    first_pass = recover_partition(layout, TOPIC, 0)
    state = lake_state(layout)
    assert first_pass["landed_end"] == 124 and first_pass["rolled_forward"] > 0
    assert recover_partition(layout, TOPIC, 0) == {"rolled_forward": 0, "temp_files_removed": 0, "landed_end": 124}
    assert lake_state(layout) == state
    assert [m[:2] for m in layout.manifests(TOPIC, 0)] == [(0, 9), (10, 99), (100, 104), (105, 124)]
    assert visible_offsets(layout) == list(range(125))


def test_a_landed_file_that_vanished_is_reported_not_ignored(layout):
    _, moves, manifest = land_until(layout, fill(0, 30), "done")
    moves[0][1].unlink()
    with pytest.raises(DataError, match="missing"):
        roll_forward(layout, manifest)
