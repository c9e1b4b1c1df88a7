"""``skewless lake compact``: a date partition's small files become large ones, and no reader
ever sees a row twice or misses one — before, during (a reader mid-scan, a consumer landing
into the same dates) and after, and after a kill -9 at any step of the compaction.

Rows are compared as the multiset of (Kafka partition, offset, ``_ingested_at``): the
offsets are what ``ingest verify`` accounts for, ``_ingested_at`` is the landing order
(``skewless.lake.LANDING_ORDER``) which a compaction must keep row by row.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from etl.batch import _save_state, plan_range, read_raw
from feature_repo.specs import VIEWS
from ingestion import compact
from ingestion.consumer import consume
from ingestion.producer import produce
from ingestion.verify import verify
from skewless.contracts import TRANSACTIONS
from skewless.lake import dataset, duckdb_source, read_events
from skewless.lake_layout import COMPACTED_PREFIX, TMP_PREFIX, LakeLayout
from tests.integration.ingest_helpers import START, consumer_process, isolated_settings, summary_of
from tests.integration.spark_fixtures import spark  # noqa: F401

KEY = ["_kafka_partition", "_kafka_offset", "_ingested_at"]
EVENTS, DAYS = 1200, 4


def tail(text: str | None) -> str:
    return (text or "")[-3000:]


def rows(table: pa.Table) -> Counter:
    cols = [table.column(c).to_pylist() for c in KEY]
    return Counter(zip(*cols))


def by_pyarrow(settings) -> Counter:
    return rows(read_events(settings.lake_path, settings.topics.transactions, "event_time", contract=TRANSACTIONS))


def by_duckdb(settings) -> Counter:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    result = con.sql(f"SELECT {', '.join(KEY)} FROM {duckdb_source(settings.lake_path, settings.topics.transactions)}"
                     ).arrow()
    return rows(result.read_all() if hasattr(result, "read_all") else result)


def raw_file_count(settings) -> int:
    return len(LakeLayout.of(settings).raw_files(settings.topics.transactions))


def leftovers(settings) -> list[Path]:
    """Files a finished compaction leaves none of: temp outputs, outputs no manifest names."""
    layout = LakeLayout.of(settings)
    topic = settings.topics.transactions
    named = {o["path"] for d in layout.raw_dates(topic) for c in layout.compactions(topic, d) for o in c["outputs"]}
    return [p for p in layout.raw_dir(topic).rglob("*") if p.is_file() and (
        p.name.startswith(TMP_PREFIX + COMPACTED_PREFIX)
        or (p.name.startswith(COMPACTED_PREFIX) and str(p.relative_to(layout.root)) not in named))]


@pytest.fixture(scope="module")
def small_files_lake(services, tmp_path_factory):
    """A lake of many small files (tiny batches over a few days), landed by the real consumer,
    and what every reader saw in it."""
    root = tmp_path_factory.mktemp("compaction")
    settings = isolated_settings(services, root / "base", ingest={"flush_records": 40})
    produced = produce(settings, events=EVENTS, seed=1301, bad_fraction=0.02, start=START, days=DAYS)
    consume(settings, until_idle=2.0)
    assert verify(settings)["ok"]
    return settings, produced, by_pyarrow(settings)


def copy_of(settings, root: Path, **compaction):
    """The module's lake copied into ``root`` (same topics and group: read-only use of Kafka)."""
    shutil.copytree(LakeLayout.of(settings).root, root / "lake")
    return settings.model_copy(update={"lake_path": str(root / "lake"), "state_dir": root / "state",
                                       "compaction": settings.compaction.model_copy(update=compaction)})


def test_after_compaction_every_reader_sees_the_same_rows_and_verify_and_the_planner_agree(
        small_files_lake, tmp_path, spark):  # noqa: F811
    base, produced, before = small_files_lake
    settings = copy_of(base, tmp_path, grace_s=0)
    files_before = raw_file_count(settings)
    assert files_before > 3 * DAYS * 2  # many small files per date
    _save_state(settings, {"started_at": time.time() + 1, "range": ["2026-01-01", "2026-01-02"]})
    assert plan_range(settings, VIEWS, None, None) is None  # the ETL has seen everything

    report = compact.run(settings, [settings.topics.transactions])
    t = report["topics"][settings.topics.transactions]
    assert t["dates_compacted"] == t["dates"] and t["inputs"] == files_before and t["outputs"] == t["dates"]
    assert raw_file_count(settings) == t["dates"] == t["files_after"]
    assert t["inputs_deleted"] == files_before  # grace 0: deleted by this run
    assert leftovers(settings) == []

    # Same rows (offsets and landing stamps) in pyarrow, DuckDB and Spark; none twice.
    assert by_pyarrow(settings) == before and max(before.values()) == 1
    assert by_duckdb(settings) == before
    assert rows(read_raw(spark, settings, "transactions", None, None, KEY).toArrow()) == before
    # The auditor accounts for every offset once, against the broker.
    assert verify(settings)["ok"]
    # Rewritten rows are not newly landed rows: the incremental planner plans nothing.
    assert plan_range(settings, VIEWS, None, None) is None
    # Rows within a compacted file are in event-time order (statistics prune by time).
    for f in LakeLayout.of(settings).raw_files(settings.topics.transactions):
        times = pq.read_table(f.path, columns=["event_time"]).column(0).to_pylist()
        assert times == sorted(times)


def test_a_reader_that_listed_the_files_before_the_commit_reads_them_all(small_files_lake, tmp_path):
    base, _, before = small_files_lake
    settings = copy_of(base, tmp_path)  # the default grace: inputs stay on disk
    mid_scan = dataset(settings.lake_path, settings.topics.transactions, TRANSACTIONS)  # listed now
    report = compact.run(settings, [settings.topics.transactions])
    assert report["topics"][settings.topics.transactions]["inputs_deleted"] == 0
    assert rows(mid_scan.to_table()) == before  # reads the inputs, still there
    assert by_pyarrow(settings) == before  # a new listing reads the outputs
    # A later run after the grace deletes the inputs; nothing changes for readers.
    later = settings.model_copy(update={"compaction": settings.compaction.model_copy(update={"grace_s": 0})})
    again = compact.run(later, [settings.topics.transactions])
    assert again["topics"][settings.topics.transactions]["inputs_deleted"] > 0
    assert by_pyarrow(settings) == before and by_duckdb(settings) == before


@pytest.mark.parametrize("point", ["compact_output_written", "compact_before_commit", "compact_after_commit",
                                   "compact_mid_delete"])
def test_kill9_at_each_step_of_a_compaction_leaves_a_valid_lake_and_the_next_run_finishes(
        small_files_lake, tmp_path, settings_file, point):
    base, _, before = small_files_lake
    settings = copy_of(base, tmp_path, grace_s=0)
    files_before = raw_file_count(settings)
    cfg = settings_file(settings)
    cmd = [sys.executable, "-m", "cli", "lake", "compact", "--config", str(cfg), "--json",
           "--topic", settings.topics.transactions]
    env = {**os.environ, "SKEWLESS_INGEST_CRASH_AT": f"{point}:2"}  # the 2nd time it is reached
    crashed = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert crashed.returncode == -signal.SIGKILL, (crashed.returncode, tail(crashed.stderr))

    # Right after the crash, before any recovery: every reader sees each row once.
    assert by_pyarrow(settings) == before
    assert by_duckdb(settings) == before
    assert verify(settings, check_kafka=False)["ok"]
    assert raw_file_count(settings) < files_before  # the first date's compaction had committed

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, tail(done.stderr)
    summary = summary_of(done.stdout)["topics"][settings.topics.transactions]
    assert summary["files_after"] == summary["dates"]
    assert by_pyarrow(settings) == before and by_duckdb(settings) == before
    assert verify(settings)["ok"]
    assert leftovers(settings) == []
    assert not [p for p in LakeLayout.of(settings).root.rglob(f"{TMP_PREFIX}*") if p.is_file()]
    # Every input of every committed compaction is gone (grace 0), every output is there.
    layout = LakeLayout.of(settings)
    topic = settings.topics.transactions
    for d in layout.raw_dates(topic):
        for c in layout.compactions(topic, d):
            assert not any((layout.root / i).exists() for i in c["inputs"])


def test_compaction_while_the_consumer_lands_into_the_same_dates(services, tmp_path, settings_file):
    settings = isolated_settings(services, tmp_path, ingest={"flush_records": 30},
                                 compaction={"grace_s": 0})
    first = produce(settings, events=600, seed=1401, start=START, days=3)
    consume(settings, until_idle=2.0)
    cfg = settings_file(settings)
    # The second wave, over the same dates, lands while compactions run.
    second = produce(settings, events=900, seed=1402, start=START, days=3)
    p = consumer_process(cfg, until_idle=4.0)
    runs = 0
    try:
        while p.poll() is None or runs < 2:
            compact.run(settings, [settings.topics.transactions])
            runs += 1
            time.sleep(0.2)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, tail(err)
    compact.run(settings, [settings.topics.transactions])
    report = verify(settings)
    assert report["ok"], report
    t = report["topics"][settings.topics.transactions]
    produced_tx = sum(x["topics"][settings.topics.transactions]["valid"] for x in (first, second))
    assert (t["valid"], t["duplicates"], t["lost"], t["lag"]) == (produced_tx, 0, 0, 0)
    assert sum(by_pyarrow(settings).values()) == produced_tx and max(by_pyarrow(settings).values()) == 1
    assert raw_file_count(settings) == len(LakeLayout.of(settings).raw_dates(settings.topics.transactions))
    # Files the consumer landed after the ETL's last start are newly landed, compacted or not.
    _save_state(settings, {"started_at": 0.0, "range": ["2026-01-01", "2026-01-02"]})
    assert plan_range(settings, VIEWS, None, None) is not None
