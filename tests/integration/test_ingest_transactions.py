"""Transactional producers: commit markers and aborted records are not lost records.

A transaction's commit or abort marker takes an offset in each partition it wrote to,
and the records of an aborted transaction keep theirs; a ``read_committed`` consumer is
given neither. A real transactional producer (librdkafka's, through confluent-kafka)
writes three committed transactions and one aborted one to both partitions of a topic;
`skewless ingest consume` (the CLI, as a process) lands the committed records, and the
auditor must account for every offset: no gap, nothing lost, lag 0, the group's offset
at the end of each partition, and `skewless ingest verify` exits 0. A record that really
went missing from the lake is still reported.
"""

from __future__ import annotations

import subprocess
import sys

import orjson
import pyarrow.dataset as ds

from ingestion.simulator import simulate
from ingestion.verify import verify
from skewless.lake_layout import LakeLayout
from skewless.topics import ensure_topics
from tests.integration.ingest_helpers import START, lake_table, librdkafka_producer, run_consumer, summary_of

OUTCOMES = ["commit", "commit", "abort", "commit"]  # the aborted one sits between committed ones
PER_TRANSACTION = 40  # split over the two partitions
PARTITIONS = 2


def test_markers_and_aborted_records_are_accounted_for_not_lost(make_settings, settings_file):
    settings = make_settings(partitions=PARTITIONS, ingest={"flush_records": 30})
    cfg = settings_file(settings)
    topic = settings.topics.transactions
    ensure_topics(settings, [topic])
    txs = simulate(len(OUTCOMES) * PER_TRANSACTION, 911, START, 1).transactions

    producer = librdkafka_producer(settings, {"transactional.id": f"skewless-test-{topic}"})
    producer.init_transactions(30)
    committed, aborted = [], []
    for k, outcome in enumerate(OUTCOMES):
        chunk = txs[k * PER_TRANSACTION:(k + 1) * PER_TRANSACTION]
        producer.begin_transaction()
        for j, tx in enumerate(chunk):
            producer.send(topic, orjson.dumps(tx), tx["user_id"].encode(), j % PARTITIONS)
        assert producer.flush(30) == 0  # in the log (so aborted records take offsets too)
        if outcome == "commit":
            producer.commit_transaction(30)
            committed += [tx["transaction_id"] for tx in chunk]
        else:
            producer.abort_transaction(30)
            aborted += [tx["transaction_id"] for tx in chunk]
    assert not producer.errors, producer.errors
    assert len(producer.produced) == len(txs)

    done = run_consumer(cfg, until_idle=2, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert summary_of(done.stdout)["topics"][topic]["consumed"] == len(committed)
    ids = lake_table(settings).column("transaction_id").to_pylist()
    assert sorted(ids) == sorted(committed) and not set(ids) & set(aborted)

    # Per partition: 4 x 20 records and 4 markers; the 20 aborted records and 4 markers
    # are offsets that hold no record a consumer sees.
    per_partition_records = len(OUTCOMES) * PER_TRANSACTION // PARTITIONS
    invisible = PER_TRANSACTION // PARTITIONS + len(OUTCOMES)
    report = verify(settings, topics=[topic])
    assert report["ok"], report
    t = report["topics"][topic]
    assert (t["valid"], t["duplicates"], t["gaps"], t["lost"], t["lag"]) == (len(committed), 0, 0, 0, 0), t
    for p, entry in t["partitions"].items():
        assert entry["end_offset"] == per_partition_records + len(OUTCOMES), (p, entry)
        assert entry["committed"] == entry["end_offset"], (p, entry)  # past the last marker too
        assert entry["markers_or_aborted"] == invisible, (p, entry)

    cli = subprocess.run([sys.executable, "-m", "cli", "ingest", "verify", "--config", str(cfg), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert summary_of(cli.stdout)["ok"] is True

    # A record that really went missing from the lake is still a gap (not taken for a marker).
    raw = LakeLayout.of(settings).raw_dir(topic)
    victim = next(f for f in sorted(raw.rglob("*.parquet"))
                  if ds.dataset(str(f), format="parquet").count_rows() > 0)
    rows = ds.dataset(str(victim), format="parquet").to_table(columns=["_kafka_partition", "_kafka_offset"])
    partition = rows.column("_kafka_partition")[0].as_py()
    lost = sorted(rows.column("_kafka_offset").to_pylist())
    victim.unlink()
    report = verify(settings, topics=[topic])
    assert not report["ok"]
    entry = report["topics"][topic]["partitions"][str(partition)]
    assert entry["lost"] == len(lost) and entry["markers_or_aborted"] == invisible, entry
    assert {o for a, b in entry["gaps"] for o in range(a, b + 1)} == set(lost), (entry["gaps"], lost)
