"""Ingestion when Kafka is not there: one clear line, a non-zero exit, and a stop that
always works.

- `ingest verify` against an address where nothing listens says that the offset check
  could not run (with the address, how to start a broker, and ``--lake-only``) and
  exits 4; with ``--lake-only`` it audits the lake alone and exits 0.
- `ingest consume` against it prints one line (the client library's own log lines are
  not shown) and exits 4.
- A consumer whose broker goes away while it runs (a PRIVATE broker, on its own ports
  and data dir, started and stopped here: the shared one is never touched) stops on
  SIGTERM (flush, commit attempt, exit 0) though every poll fails, and a restart after
  the broker is back lands nothing twice.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from ingestion.producer import produce
from ingestion.verify import verify
from skewless.services import kafka as kafka_service
from skewless.services.server_process import free_port
from tests.integration.ingest_helpers import (
    START, assert_exactly_once, consumer_process, expected_transaction_ids, manifest_count, run_consumer,
    summary_of, wait_for,
)
from tests.isolation import isolated_settings

pytestmark = pytest.mark.wallclock  # waits for a broker that is gone


def _cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "cli", "ingest", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def _nowhere_env(address: str) -> dict:
    """The address in the environment too: it overrides the file, and an inherited one must not win."""
    return {"SKEWLESS_KAFKA__BOOTSTRAP_SERVERS": address}


@pytest.fixture
def nowhere(make_settings, settings_file):
    """A settings file whose bootstrap address has nothing listening on it."""
    address = f"127.0.0.1:{free_port()}"
    settings = make_settings(kafka={"bootstrap_servers": [address]})
    return settings, settings_file(settings), address


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def test_verify_without_a_broker_says_the_offset_check_could_not_run(nowhere):
    settings, cfg, address = nowhere
    done = _cli("verify", "--config", str(cfg), "--json", env=_nowhere_env(address))
    assert done.returncode == 4, (done.returncode, done.stdout, done.stderr)
    assert '"ok": true' not in done.stdout
    lines = _lines(done.stderr)
    assert len(lines) == 1, done.stderr  # no client library log lines
    assert lines[0].startswith("error: the offset check could not run"), lines
    for part in (address, "skewless services up", "--lake-only"):
        assert part in lines[0], (part, lines[0])

    lake_only = _cli("verify", "--config", str(cfg), "--json", "--lake-only", env=_nowhere_env(address))
    assert lake_only.returncode == 0, lake_only.stderr
    report = summary_of(lake_only.stdout)
    assert report["ok"] is True and report["kafka_checked"] is False


def test_consume_without_a_broker_prints_one_clear_line(nowhere):
    settings, cfg, address = nowhere
    done = _cli("consume", "--config", str(cfg), "--json", "--until-idle", "2", env=_nowhere_env(address))
    assert done.returncode == 4, (done.returncode, done.stderr)
    lines = _lines(done.stderr)
    assert lines == [f"error: no Kafka broker answers at {address} (start one with: skewless services up)"], done.stderr
    assert done.stdout.strip() == ""


@pytest.fixture
def private_broker(services, tmp_path):
    port, controller = free_port(), free_port()
    settings = isolated_settings(
        services, tmp_path / "private",
        kafka={"bootstrap_servers": [f"localhost:{port}"], "partitions": 2},
        services={"kafka_port": port, "kafka_controller_port": controller, "kafka_heap": "384m"},
        ingest={"flush_records": 500})
    kafka_service.up(settings)
    try:
        yield settings
    finally:
        kafka_service.down(settings)


def test_sigterm_stops_a_consumer_whose_broker_went_away(private_broker, settings_file):
    settings = private_broker
    cfg = settings_file(settings)
    produced = produce(settings, events=3000, seed=921, start=START, days=1)
    total = produced["produced"]
    landed = lambda: sum(t["landed"] for t in verify(settings, check_kafka=False)["topics"].values())  # noqa: E731

    p = consumer_process(cfg, until_idle=0)  # runs until a signal
    try:
        assert wait_for(lambda: landed() >= total or p.poll() is not None, timeout=120)
        assert p.poll() is None, p.stderr.read()[-3000:]
        kafka_service.down(settings)  # the broker goes away under the running consumer
        time.sleep(3.0)  # its polls now fail
        assert p.poll() is None, p.stderr.read()[-3000:]
        p.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        out, err = p.communicate(timeout=60)
        stop_s = time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err[-3000:]
    assert "Traceback" not in err
    assert "ECONNREFUSED" not in err and " ERROR " not in err, err[-3000:]  # the client's reconnect noise is not shown
    assert summary_of(out)["consumed"] == total
    print(f"stopped {stop_s:.1f}s after SIGTERM with the broker away")  # a figure for the report, not asserted

    # The broker back: a new run lands nothing again (it resumes after what landed), and
    # the audit against the broker finds every event once, lag 0.
    batches = manifest_count(settings)
    kafka_service.up(settings)
    again = run_consumer(cfg, until_idle=2, timeout=180)
    assert again.returncode == 0, again.stderr[-3000:]
    assert summary_of(again.stdout)["consumed"] == 0 and manifest_count(settings) == batches
    assert_exactly_once(settings, [produced], expected_transaction_ids(produced, 3000, 1))
