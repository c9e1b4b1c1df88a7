"""The streaming job end to end — real Kafka, Spark Structured Streaming, Redis and Feast —
killed with SIGKILL twice while it works, then restarted: every event is applied exactly
once, and the values Feast serves equal the batch job's offline values at the instant the
stream last published (every view, every entity)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
import redis

from etl.batch import run_batch
from etl.stream_state import StreamState
from ingestion.producer import produce
from skewless.features import store as feast_store
from skewless.features.definitions import load as load_definitions
from skewless.lake_layout import LakeLayout
from tests.integration.ingest_helpers import run_consumer
from tests.integration.spark_fixtures import spark  # noqa: F401

pytestmark = pytest.mark.integration


def _stream(cfg, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cli", "etl", "stream", "--config", str(cfg), "--json", "--verbose", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _applied(state: StreamState) -> int:
    s = state.status()
    return s.events if s else 0


def _wait_applied(state: StreamState, proc: subprocess.Popen, at_least: int) -> None:
    """Until the stream has applied ``at_least`` events; a job that dies fails the test, one
    that hangs is ended by the test's timeout mark (no deadline here: a busy machine is slow)."""
    while _applied(state) < at_least:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.2)


@pytest.mark.timeout(1800)
def test_kill_9_twice_then_restart_applies_every_event_once_and_serves_the_offline_values(
        spark, make_settings, settings_file):  # noqa: F811
    settings = make_settings(feast_project=f"sj{os.getpid()}", stream={"max_offsets_per_trigger": 400})
    definitions = load_definitions(settings)
    feast_store.apply(settings, definitions)
    cfg = settings_file(settings)
    client = redis.Redis.from_url(settings.redis_url)
    state = StreamState(client, settings.feast_project)
    # Recent traffic (the last 2 days, up to now), so the 1h and 24h windows are live.
    start = (datetime.now(timezone.utc) - timedelta(days=2)).replace(microsecond=0)
    first = produce(settings, events=3000, seed=5, start=start, days=2)
    valid = first["topics"][settings.topics.transactions]["valid"] + first["topics"][settings.topics.labels]["valid"]

    job = _stream(cfg)
    try:
        _wait_applied(state, job, 700)
        job.send_signal(signal.SIGKILL)  # mid-run: a batch may be half applied
        job.wait()
        job = _stream(cfg)
        _wait_applied(state, job, 1900)
        job.send_signal(signal.SIGKILL)
        job.wait()
    finally:
        if job.poll() is None:
            job.kill()
    # A third run drains the rest and stops when idle.
    done = subprocess.run([sys.executable, "-m", "cli", "etl", "stream", "--config", str(cfg), "--json",
                           "--until-idle", "4"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["lag"] == 0 and not summary["rebuilt"]
    status = state.status()
    # Exactly once: every valid event counted once over three runs and two kills.
    assert status.events == valid, (status.events, valid)

    # The batch job over the landed lake: the offline values at the stream's last publication.
    assert run_consumer(cfg).returncode == 0
    run_batch(settings, views=definitions.views)
    at = pd.Timestamp(status.published_at, unit="s", tz="UTC")
    store = feast_store.feature_store(settings)
    compared = 0
    for view in definitions.views:
        table = pd.read_parquet(LakeLayout.of(settings).features_dir(view.name))
        table["event_timestamp"] = pd.to_datetime(table["event_timestamp"], utc=True)
        latest = (table[table.event_timestamp <= at].sort_values("event_timestamp")
                  .groupby(view.join_keys).tail(1))  # (.last() would skip nulls)
        rows = [{k: r[k] for k in view.join_keys} for r in latest.to_dict("records")]
        online = store.get_online_features(features=[f"{view.name}:{f}" for f in view.features],
                                           entity_rows=rows).to_dict()
        for i, rec in enumerate(latest.to_dict("records")):
            for f in view.features:
                want, got = rec[f], online[f][i]
                if want is None or (isinstance(want, float) and math.isnan(want)):
                    assert got is None, (view.name, rows[i], f, want, got)
                elif isinstance(want, (float, np.floating)):
                    assert got is not None and math.isclose(want, got, rel_tol=1e-9, abs_tol=1e-9), \
                        (view.name, rows[i], f, want, got)
                else:
                    assert want == got, (view.name, rows[i], f, want, got)
                compared += 1
    assert compared > 1000
