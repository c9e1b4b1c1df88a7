"""The online store after a Redis restart or a loss, on a private real Redis (started by
``skewless.services.redis_server`` on its own port and directory, never the shared one)
and real Feast: the AOF keeps every key through a ``kill -9``; a lost store (flushed,
keys missing, SQLite file gone) makes ``/readyz`` 503 with the command that fixes it, and
a plain ``materialize`` notices and reloads it in full to exactly the values before."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from etl.batch import run_batch
from serving.app import create_app
from serving.store_watermark import FIX
from skewless.features import store as feast_store
from skewless.features.definitions import load as load_definitions
from skewless.features import watermark
from skewless.services import redis_server
from skewless.services.process import pid_alive, read_pid
from skewless.services.server_process import free_port
from tests.integration.lake_fixtures import land_simulation
from tests.integration.spark_fixtures import spark  # noqa: F401
from tests.isolation import with_overrides

START = datetime(2026, 5, 1, tzinfo=timezone.utc)
DAYS = 3
END = START + timedelta(days=DAYS)


@pytest.fixture(scope="module")
def lake(spark, services, tmp_path_factory):  # noqa: F811
    """A small simulated lake and its offline tables, shared by the module's tests."""
    tmp = tmp_path_factory.mktemp("recovery")
    settings = with_overrides(services, lake_path=str(tmp / "lake"), state_dir=str(tmp / "state"),
                              serving={"log_predictions": False})
    land_simulation(settings, events=3_000, seed=9, start=START, days=DAYS)
    run_batch(settings, views=load_definitions(settings).views)
    return settings


@pytest.fixture
def private_redis(services, tmp_path):
    """A Redis of this test only, started like ``skewless services up`` starts one."""
    port = free_port()
    own = with_overrides(services, state_dir=str(tmp_path / "redis-state"), services={"redis_port": port})
    assert redis_server.up(own)["started"]
    yield own
    redis_server.down(own)


def _feast_settings(lake, tmp_path: Path, private_redis, online_store: str = "redis"):
    return with_overrides(lake, state_dir=str(tmp_path / "state"), online_store=online_store,
                          redis_url=f"redis://127.0.0.1:{private_redis.services.redis_port}/0",
                          feast_project=f"r{uuid.uuid4().hex[:10]}")


def _client(settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url)


def _dump(settings, store) -> dict:
    """Everything the online store holds for the project (the watermark aside)."""
    if settings.online_store == "redis":
        client = _client(settings)
        wm = watermark.redis_key(settings.feast_project).encode()
        return {k: client.hgetall(k) for k in client.scan_iter(count=1000) if k != wm}
    import sqlite3

    conn = sqlite3.connect(watermark.online_sqlite_path(settings))
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
              if r[0].startswith(store.project + "_")]
    out = {t: conn.execute(f'SELECT entity_key, feature_name, value, event_ts FROM "{t}" '
                           "ORDER BY entity_key, feature_name").fetchall() for t in tables}
    conn.close()
    return out


def _kill_9(redis_settings) -> None:
    pid = read_pid(redis_settings.state_dir / "services" / "redis" / "redis.pid")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    while pid_alive(pid):  # a hang fails on the test's timeout
        time.sleep(0.05)


def _aof_written(settings) -> None:
    """Wait until Redis has handed its AOF buffer to the OS. An acknowledged write is
    normally written before the reply; only while a background fsync is still running
    does Redis postpone that write (for up to 2 s). The test is about persistence, not that race."""
    client = _client(settings)
    while True:
        info = client.info("persistence")
        if info["aof_enabled"] and info.get("aof_buffer_length", 0) == 0 and not info.get("aof_pending_bio_fsync"):
            return
        time.sleep(0.05)


def test_the_online_store_survives_a_redis_kill_9(lake, private_redis, tmp_path):
    settings = _feast_settings(lake, tmp_path, private_redis)
    store = feast_store.feature_store(settings)
    feast_store.apply(settings, load_definitions(settings), store)
    first = feast_store.materialize(settings, end=END, store=store)
    assert first["full"] and first["full_reason"].startswith("first load") and not first["store_lost"]
    assert all(n > 0 for n in first["keys"].values()) and len(first["keys"]) == 5
    before = _dump(settings, store)
    marks = watermark.read(settings)
    assert {v: m.keys for v, m in marks.items()} == first["keys"] and {m.until for m in marks.values()} == {END}
    assert redis_server.status(private_redis)["persistence"] == "aof (appendfsync everysec)"

    _aof_written(settings)
    _kill_9(private_redis)
    assert redis_server.up(private_redis)["started"]
    assert _dump(settings, store) == before and len(before) > 500
    assert watermark.read(settings) == marks
    # Nothing was lost, so the next materialization stays incremental.
    again = feast_store.materialize(settings, end=END + timedelta(hours=1), store=store)
    assert not again["full"] and not again["store_lost"] and again["keys"] == first["keys"]


def test_a_flushed_store_is_not_ready_and_a_plain_materialize_reloads_it_in_full(
        lake, private_redis, tmp_path, settings_file):
    settings = _feast_settings(lake, tmp_path, private_redis)
    store = feast_store.feature_store(settings)
    feast_store.apply(settings, load_definitions(settings), store)
    loaded = feast_store.materialize(settings, end=END, store=store)
    before = _dump(settings, store)
    with TestClient(create_app(settings, store)) as c:
        ready = c.get("/readyz").json()
        assert not any("watermark" in p for p in ready["problems"]), ready  # (no champion here: that is another problem)
        assert "skewless_online_store_loaded 1.0" in c.get("/metrics").text

        _client(settings).flushall()  # the store is lost (a restart without persistence does the same)

        ready = c.get("/readyz")
        assert ready.status_code == 503
        lost = [p for p in ready.json()["problems"] if "no watermark" in p]
        assert lost and FIX in lost[0], ready.json()
        text = c.get("/metrics").text
        assert "skewless_online_store_loaded 0.0" in text
        assert 'skewless_online_store_watermark_age_seconds{view="user_spend"} +Inf' in text

        out = subprocess.run([sys.executable, "-m", "cli", "features", "materialize", "--end", END.isoformat(),
                              "--json", "--config", str(settings_file(settings))],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        summary = json.loads(out.stdout.strip().splitlines()[-1])
        assert summary["store_lost"] and summary["full"] and "no watermark" in summary["full_reason"]
        said = " ".join(out.stderr.split())  # the human summary (stdout has the JSON)
        assert "no watermark" in said and "reloaded every view in full" in said, said
        assert summary["keys"] == loaded["keys"]
        assert _dump(settings, store) == before  # every value as it was before the loss

        ready = c.get("/readyz").json()
        assert not any("watermark" in p for p in ready["problems"]), ready
        text = c.get("/metrics").text
        assert "skewless_online_store_loaded 1.0" in text
        age = float(text.split('skewless_online_store_watermark_age_seconds{view="user_spend"} ')[1].split()[0])
        assert age != float("inf")  # the gauge sees the new watermark
        assert watermark.read(settings)["user_spend"].until == END  # loaded up to END


@pytest.mark.parametrize("online_store", ["redis", "sqlite"])
def test_a_partly_lost_store_is_noticed_and_reloaded_in_full(lake, private_redis, tmp_path, online_store):
    settings = _feast_settings(lake, tmp_path, private_redis, online_store)
    store = feast_store.feature_store(settings)
    feast_store.apply(settings, load_definitions(settings), store)
    feast_store.materialize(settings, end=END - timedelta(days=1), store=store)
    first = feast_store.materialize(settings, end=END, store=store)  # incremental
    assert not first["full"]
    before = _dump(settings, store)
    if online_store == "redis":  # half the entity keys evicted, the watermark kept
        client = _client(settings)
        keys = [k for k in client.scan_iter(count=1000) if k != watermark.redis_key(settings.feast_project).encode()]
        client.delete(*keys[::2])
        expect = "fewer entity keys than its watermark recorded"
    else:  # the whole database file (and its watermark) gone
        watermark.online_sqlite_path(settings).unlink()
        store = feast_store.feature_store(settings)  # as a new `materialize` process would (not the old file's handle)
        expect = "no watermark"
    again = feast_store.materialize(settings, end=END, store=store)
    assert again["store_lost"] and again["full"] and expect in again["full_reason"], again
    assert again["keys"] == first["keys"]
    assert _dump(settings, store) == before
    # And a store that is whole again is loaded incrementally.
    assert not feast_store.materialize(settings, end=END, store=store)["full"]


def test_the_watermark_is_only_advanced_where_a_full_load_wrote_one(private_redis, tmp_path):
    for online_store in ("redis", "sqlite"):
        settings = with_overrides(private_redis, state_dir=str(tmp_path / online_store), online_store=online_store,
                                  redis_url=f"redis://127.0.0.1:{private_redis.services.redis_port}/0",
                                  feast_project=f"w{uuid.uuid4().hex[:10]}")
        t = datetime(2026, 1, 1, tzinfo=timezone.utc)
        assert watermark.read(settings) == {}
        assert watermark.advance(settings, {"a": t}, "stream") == []  # a lost store stays lost
        assert watermark.read(settings) == {}
        watermark.write(settings, {"a": watermark.Mark(t, 7, watermark.now(), "materialize")})
        assert watermark.advance(settings, {"a": t + timedelta(hours=1), "b": t}, "stream") == ["a"]
        assert watermark.advance(settings, {"a": t}, "stream") == ["a"]  # never backwards
        marks = watermark.read(settings)
        assert set(marks) == {"a"} and marks["a"].until == t + timedelta(hours=1)
        assert (marks["a"].keys, marks["a"].writer) == (7, "stream")
        watermark.clear(settings)
        assert watermark.read(settings) == {}
