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

START = datetime(2026, 3, 1, tzinfo=timezone.utc)


def consumer_process(config: Path, until_idle: float = 4.0, env: dict | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "skewless.cli", "ingest", "consume", "--config", str(config), "--json"]
    if until_idle:
        cmd += ["--until-idle", str(until_idle)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def run_consumer(config: Path, until_idle: float = 4.0, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    p = consumer_process(config, until_idle, env)
    out, err = p.communicate(timeout=timeout)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def lake_table(settings, contract: str = "transactions") -> pa.Table:
    root = Path(settings.lake_path) / "raw" / getattr(settings.topics, contract)
    if not root.exists():
        return pa.table({"transaction_id": pa.array([], pa.string())})
    return ds.dataset(str(root), format="parquet", partitioning="hive").to_table(
        columns=["transaction_id", "_kafka_partition", "_kafka_offset"])


def dead_letters(settings, contract: str = "transactions") -> pa.Table | None:
    root = Path(settings.lake_path) / "dead_letter" / getattr(settings.topics, contract)
    if not root.exists():
        return None
    return ds.dataset(str(root), format="parquet").to_table()


def temp_files(settings) -> list[Path]:
    return [p for p in Path(settings.lake_path).rglob(".tmp-*")]


def landed_files(settings) -> int:
    return sum(1 for _ in (Path(settings.lake_path) / "raw").rglob("*.parquet")) if Path(settings.lake_path, "raw").exists() else 0


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
