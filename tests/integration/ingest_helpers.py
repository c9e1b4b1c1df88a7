"""Helpers for ingestion tests: run the consumer as a real process, read the lake back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds

from skewless.lake_layout import TMP_PREFIX, LakeLayout

START = datetime(2026, 3, 1, tzinfo=timezone.utc)


def consumer_process(config: Path, until_idle: float = 4.0, env: dict | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "cli", "ingest", "consume", "--config", str(config), "--json"]
    if until_idle:
        cmd += ["--until-idle", str(until_idle)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def run_consumer(config: Path, until_idle: float = 4.0, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    p = consumer_process(config, until_idle, env)
    out, err = p.communicate(timeout=timeout)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def lake_table(settings, contract: str = "transactions") -> pa.Table:
    files = [str(f.path) for f in LakeLayout.of(settings).raw_files(getattr(settings.topics, contract))]
    if not files:
        return pa.table({"transaction_id": pa.array([], pa.string())})
    return ds.dataset(files, format="parquet").to_table(columns=["transaction_id", "_kafka_partition", "_kafka_offset"])


def dead_letters(settings, contract: str = "transactions") -> pa.Table | None:
    root = LakeLayout.of(settings).dead_letter_dir(getattr(settings.topics, contract))
    if not root.exists():
        return None
    return ds.dataset(str(root), format="parquet").to_table()


def temp_files(settings) -> list[Path]:
    return [p for p in LakeLayout.of(settings).root.rglob(f"{TMP_PREFIX}*")]


def landed_files(settings) -> int:
    raw = LakeLayout.of(settings).raw_root
    return sum(1 for _ in raw.rglob("*.parquet")) if raw.exists() else 0


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def kill9(p: subprocess.Popen) -> None:
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=30)


# --- shared by test_ingest_basics.py and test_ingest_reliability.py


def summary_of(stdout: str) -> dict:
    """The ``--json`` summary: the last line of a CLI command's stdout."""
    import json

    lines = [ln for ln in stdout.strip().splitlines() if ln.strip()]
    assert lines, "the command printed nothing on stdout"
    return json.loads(lines[-1])


def expected_transaction_ids(produced: dict, events: int, days: int, start=START) -> list[str]:
    """The ids of the valid transactions a ``produce(...)`` call sent (the simulator is seeded)."""
    from ingestion.simulator import simulate

    return [t["transaction_id"] for t in simulate(events, produced["seed"], start, days).transactions]


def manifest_count(settings) -> int:
    root = LakeLayout.of(settings).manifests_root
    return sum(1 for p in root.rglob("*.json") if not p.name.startswith(".")) if root.exists() else 0


def assert_exactly_once(settings, produced: list[dict], expected_ids: list[str]) -> dict:
    """The auditor finds every offset once; every produced valid transaction is in the lake once."""
    from collections import Counter

    from ingestion.verify import verify

    report = verify(settings)
    assert report["ok"], report
    want: dict[str, dict[str, int]] = {}
    for p in produced:
        for topic, counts in p["topics"].items():
            w = want.setdefault(topic, {"valid": 0, "bad": 0, "produced": 0})
            for k in w:
                w[k] += counts[k]
    for topic, w in want.items():
        t = report["topics"][topic]
        assert t["duplicates"] == 0 and t["gaps"] == 0, (topic, t)
        assert (t["valid"], t["dead_lettered"]) == (w["valid"], w["bad"]), (topic, t, w)
        assert t["valid"] + t["dead_lettered"] == w["produced"]
        assert t["lag"] == 0, (topic, t)  # everything consumed was committed
    counts = Counter(lake_table(settings).column("transaction_id").to_pylist())
    assert not {i: c for i, c in counts.items() if c > 1}
    assert set(counts) == set(expected_ids) and len(counts) == len(expected_ids)
    assert temp_files(settings) == []
    return report


def broker_settings(settings):
    """Settings whose ``state_dir`` is the one that manages the running broker.

    ``services.kafka.down`` stops the broker through the pid file under its state dir; the
    session's broker may have been started from another checkout's state dir (found from
    the broker process's ``-Dkafka.logs.dir``), and the restart must hit that one.
    """
    from skewless.services import kafka as kafka_service

    if kafka_service.status(settings)["managed"]:
        return settings
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"kafka.Kafka" not in args:
            continue
        for a in args:
            if a.startswith(b"-Dkafka.logs.dir="):
                state_dir = Path(a.split(b"=", 1)[1].decode()).parent.parent
                candidate = settings.model_copy(update={"state_dir": state_dir})
                if kafka_service.status(candidate)["pid"] == int(proc.name):
                    return candidate
    raise AssertionError("cannot find the state dir that manages the running Kafka broker")


def isolated_settings(services, root: Path, **overrides):
    """Like conftest's ``make_settings``, for module-scoped fixtures (own topics, group, lake)."""
    import uuid

    from skewless.settings import Settings

    tag = uuid.uuid4().hex[:10]
    data = services.model_dump()
    data.update(lake_path=str(root / "lake"), state_dir=str(root / "state"),
                topics={"transactions": f"tx-{tag}", "labels": f"lb-{tag}", "predictions": f"pr-{tag}"})
    data["kafka"] = {**data["kafka"], "consumer_group": f"g-{tag}", "partitions": overrides.pop("partitions", 4)}
    data["services"] = {**data["services"], "jar_cache_dir": str(services.services.jar_cache_dir)}
    for key, value in overrides.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and isinstance(data.get(key), dict) else value
    return Settings.model_validate(data)


def librdkafka_producer(settings, config: dict | None = None):
    """A confluent-kafka (librdkafka) producer: an independent client, like the Java and
    librdkafka producers real systems use (codecs, transactions). ``produced`` collects
    (partition, offset, key) of every delivered record; ``errors`` every failed one."""
    from confluent_kafka import Producer

    class Recording(Producer):
        def __init__(self, conf):
            super().__init__(conf)
            self.produced: list[tuple[int, int, bytes]] = []
            self.errors: list[str] = []

        def delivered(self, err, msg):
            if err is not None:
                self.errors.append(str(err))
            else:
                self.produced.append((msg.partition(), msg.offset(), msg.key()))

        def send(self, topic: str, value: bytes, key: bytes, partition: int) -> None:
            self.produce(topic, value=value, key=key, partition=partition, on_delivery=self.delivered)

    return Recording({"bootstrap.servers": ",".join(settings.kafka.bootstrap_servers), "acks": "all", **(config or {})})
