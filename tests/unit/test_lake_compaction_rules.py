"""Which files hold a topic's rows around a compaction (``LakeLayout.raw_files``), and that
the consumer's recovery accepts batches whose files a compaction replaced and deleted —
driven step by step on a temp directory, without Kafka."""

from __future__ import annotations

import json
import os
import time

import pyarrow.dataset as ds
import pytest

from ingestion import compact
from ingestion.lake_files import recover_partition
from skewless.contracts import TRANSACTIONS
from skewless.lake import PARTITIONING, topic_schema
from skewless.lake_layout import COMPACTED_PREFIX, LakeLayout
from skewless.settings import load_settings
from tests.unit.test_lake_files import TOPIC, fill, land_until


@pytest.fixture
def settings(tmp_path):
    base = load_settings(None)
    return base.model_copy(update={
        "lake_path": str(tmp_path / "lake"), "state_dir": tmp_path / "state",
        "topics": base.topics.model_copy(update={"transactions": TOPIC}),
        "compaction": base.compaction.model_copy(update={"grace_s": 3600})})


def whole(layout: LakeLayout):
    """Every row and column the readers see, in offset order."""
    files = [str(f.path) for f in layout.raw_files(TOPIC)]
    return ds.dataset(files, format="parquet", partitioning=PARTITIONING, partition_base_dir=str(
        layout.raw_dir(TOPIC)), schema=topic_schema(TRANSACTIONS)).to_table().sort_by("_kafka_offset")


def offsets(layout: LakeLayout) -> list[int]:
    files = [str(f.path) for f in layout.raw_files(TOPIC)]
    return sorted(ds.dataset(files, format="parquet").to_table(columns=["_kafka_offset"]).column(0).to_pylist())


def test_a_committed_compaction_swaps_its_inputs_for_its_output_and_an_uncommitted_one_is_invisible(settings):
    layout = LakeLayout.of(settings)
    for first in (0, 50, 100):
        land_until(layout, fill(first, 50), "done")
    before = layout.raw_files(TOPIC)
    landed = {f.date: max(g.landed_at for g in before if g.date == f.date) for f in before}
    assert offsets(layout) == list(range(150))
    rows_before = whole(layout)

    # An output whose compaction never committed (a crash before its manifest): not a row.
    day = before[0].date
    stray = layout.date_dir(TOPIC, day) / f"{COMPACTED_PREFIX}20260101T000000000000-abcdef-0.parquet"
    stray.write_bytes(before[0].path.read_bytes())
    assert offsets(layout) == list(range(150))

    time.sleep(0.05)
    report = compact.run(settings, [TOPIC])["topics"][TOPIC]
    assert report["orphans_removed"] == 1 and not stray.exists()
    after = layout.raw_files(TOPIC)
    # One file per date; a date that held one file already is left as it is.
    per_date = {d: sum(f.date == d for f in before) for d in {f.date for f in before}}
    assert sorted(f.date for f in after) == sorted(per_date) and max(per_date.values()) > 1
    assert {f.date: f.compacted for f in after} == {d: n > 1 for d, n in per_date.items()}
    assert offsets(layout) == list(range(150))
    assert whole(layout).equals(rows_before)  # every value of every row, landing stamps included
    # Rewritten rows keep the landing time of their inputs (the ETL planner's question).
    assert {f.date: f.landed_at for f in after} == landed
    # The inputs are still on disk (the grace), listed by no reader.
    assert all(f.path.exists() for f in before)


def test_the_consumer_recovers_batches_whose_files_were_compacted_and_deleted(settings):
    layout = LakeLayout.of(settings)
    for first in (0, 50, 100):
        land_until(layout, fill(first, 50), "done")
    settings = settings.model_copy(update={"compaction": settings.compaction.model_copy(update={"grace_s": 0})})
    report = compact.run(settings, [TOPIC])["topics"][TOPIC]
    assert report["inputs_deleted"] == report["inputs"] > 0
    # Recovery rolls the newest manifests forward: their files are gone, their rows are not.
    assert recover_partition(layout, TOPIC, 0)["landed_end"] == 149
    assert offsets(layout) == list(range(150))
    # A file a manifest names that no compaction replaced is still an altered lake.
    victim = json.loads(layout.manifests(TOPIC, 0)[-1][2].read_text())["files"][0]["final"]
    day = victim.split("/")[2][5:]
    manifest = next(layout.compactions_dir(TOPIC, day).glob("*.json"))
    body = json.loads(manifest.read_text())
    body["inputs"].remove(victim)
    manifest.write_text(json.dumps(body))
    from skewless.errors import DataError

    with pytest.raises(DataError, match="lake was altered"):
        recover_partition(layout, TOPIC, 0)


def test_one_compaction_of_a_topic_at_a_time(settings):
    from skewless.errors import ServiceError

    layout = LakeLayout.of(settings)
    land_until(layout, fill(0, 50), "done")
    with compact._locked(layout, TOPIC):
        pid = os.fork()
        if pid == 0:  # another process tries meanwhile
            try:
                compact.run(settings, [TOPIC])
            except ServiceError:
                os._exit(7)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 7
