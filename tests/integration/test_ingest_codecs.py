"""Compressed batches from a real producer land; a batch no library here can read stops
the consumer with one clear error.

One topic is fed by librdkafka (confluent-kafka, an independent client, as Java and
librdkafka producers send) with every codec Kafka defines, one after the other in each
partition: none, gzip, snappy, lz4, zstd. `skewless ingest consume` (the real CLI, as a
process) must land every event exactly once.

Then, for lz4, zstd and snappy: the same consumer with that codec's library hidden
from it (a package of the same name that fails to import, first on its PYTHONPATH,
which is what kafka-python sees when the library is not installed) must stop at the
first batch in that codec, name the codec, the topic, partition and offset and the
package to install, exit 1 without a traceback, and have landed and committed every
event before that batch (each such run has its own consumer group and lake).
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from ingestion.simulator import simulate
from ingestion.verify import verify
from skewless.topics import ensure_topics
from tests.integration.ingest_helpers import (
    START, lake_table, librdkafka_producer, run_consumer, summary_of, temp_files,
)
from tests.isolation import with_overrides

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
PER_CODEC_AND_PARTITION = 60
PARTITIONS = 2
# The module kafka-python imports for each codec (kafka/codec.py) and the package that has it.
CODEC_MODULES = {"snappy": ("snappy", "python-snappy"), "lz4": ("lz4", "lz4"), "zstd": ("zstandard", "zstandard")}


@pytest.fixture(scope="module")
def fed(services, tmp_path_factory):
    """The transactions topic, fed codec after codec in each partition. Returns the settings
    and, per (codec, partition), the transaction ids and offsets sent."""
    from tests.isolation import isolated_settings

    root = tmp_path_factory.mktemp("codecs")
    settings = isolated_settings(services, root, kafka={"partitions": PARTITIONS}, ingest={"flush_records": 50})
    topic = settings.topics.transactions
    ensure_topics(settings, [topic])
    txs = simulate(len(CODECS) * PARTITIONS * PER_CODEC_AND_PARTITION, 901, START, 1).transactions
    sent: dict[tuple[str, int], dict] = {}
    chunks = iter(range(0, len(txs), PER_CODEC_AND_PARTITION))
    for codec in CODECS:
        # linger: the records of one codec and partition go out as few, real batches
        producer = librdkafka_producer(settings, {"compression.type": codec, "linger.ms": 200})
        for partition in range(PARTITIONS):
            i = next(chunks)
            chunk = txs[i:i + PER_CODEC_AND_PARTITION]
            for tx in chunk:
                producer.send(topic, orjson.dumps(tx), tx["user_id"].encode(), partition)
            sent[(codec, partition)] = {"ids": [tx["transaction_id"] for tx in chunk]}
        assert producer.flush(60) == 0 and not producer.errors, producer.errors
        for partition in range(PARTITIONS):
            offsets = sorted(o for p, o, _ in producer.produced if p == partition)
            assert len(offsets) == PER_CODEC_AND_PARTITION
            sent[(codec, partition)]["offsets"] = offsets
    return settings, sent


def _config(settings, settings_file, root: Path, name: str):
    """A consumer group and lake of their own, on the fed topic."""
    own = with_overrides(settings, lake_path=str(root / name / "lake"), state_dir=str(root / name / "state"),
                         kafka={"consumer_group": f"{settings.kafka.consumer_group}-{name}"})
    return own, settings_file(own)


def test_every_codec_from_librdkafka_lands_exactly_once(fed, settings_file, tmp_path):
    settings, sent = fed
    own, cfg = _config(settings, settings_file, tmp_path, "all")
    topic = own.topics.transactions
    done = run_consumer(cfg, until_idle=2, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    total = len(CODECS) * PARTITIONS * PER_CODEC_AND_PARTITION
    assert summary_of(done.stdout)["topics"][topic]["consumed"] == total

    lake = lake_table(own)
    ids = lake.column("transaction_id").to_pylist()
    assert len(ids) == len(set(ids)) == total
    landed = dict(zip(ids, zip(lake.column("_kafka_partition").to_pylist(), lake.column("_kafka_offset").to_pylist())))
    for (codec, partition), batch in sent.items():
        # Every event of every codec, at the partition and offset it was sent to.
        assert [landed[i] for i in batch["ids"]] == [(partition, o) for o in batch["offsets"]], codec

    report = verify(own, topics=[topic])
    assert report["ok"], report
    t = report["topics"][topic]
    assert (t["valid"], t["dead_lettered"], t["duplicates"], t["lost"], t["lag"]) == (total, 0, 0, 0, 0)
    assert temp_files(own) == []


@pytest.mark.parametrize("codec", ["snappy", "lz4", "zstd"])
def test_a_codec_without_its_library_stops_the_consumer_with_one_clear_error(fed, settings_file, tmp_path, codec):
    settings, sent = fed
    own, cfg = _config(settings, settings_file, tmp_path, f"no-{codec}")
    topic = own.topics.transactions
    module, package = CODEC_MODULES[codec]
    hidden = tmp_path / "hidden" / module
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text(f"raise ImportError('{module} is hidden from this process by a test')\n")

    stopped = run_consumer(cfg, until_idle=30, env={"PYTHONPATH": str(hidden.parent)}, timeout=120)
    assert stopped.returncode == 1, (stopped.returncode, stopped.stderr[-3000:])
    errors = [ln for ln in stopped.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, stopped.stderr
    assert "Traceback" not in stopped.stderr
    error = errors[0]
    assert f"{codec}-compressed batch" in error and f"pip install {package}" in error, error
    assert f"topic {topic} partition " in error, error
    # It names the first batch in that codec of the partition it stopped on.
    partition = int(error.split(" partition ")[1].split()[0])
    offset = int(error.split(" offset ")[1].split(":")[0])
    assert offset == sent[(codec, partition)]["offsets"][0], (error, sent[(codec, partition)]["offsets"][:3])

    # What it read before that batch landed and was committed: nothing lost, nothing twice,
    # the group's offset in that partition is the failed batch (the next run resumes there).
    report = verify(own, topics=[topic])
    assert report["ok"], report
    entry = report["topics"][topic]["partitions"][str(partition)]
    assert entry["committed"] == offset and entry["landed"] == offset and entry["lag"] > 0
    before = {i for c in CODECS[:CODECS.index(codec)] for i in sent[(c, partition)]["ids"]}
    after = {i for c in CODECS[CODECS.index(codec):] for p in range(PARTITIONS) for i in sent[(c, p)]["ids"]}
    landed = set(lake_table(own).column("transaction_id").to_pylist())
    assert before <= landed and not landed & after

    # With the library back, the next run lands the rest, each event once.
    done = run_consumer(cfg, until_idle=2, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    report = verify(own, topics=[topic])
    t = report["topics"][topic]
    assert report["ok"] and (t["landed"], t["lag"]) == (len(CODECS) * PARTITIONS * PER_CODEC_AND_PARTITION, 0), report
