"""``skewless bench freshness``: registered, and its arguments are checked before any service
is touched (a bad one is one clear line and a non-zero exit, never a run)."""

import json
import os
import subprocess
import sys

import pytest

from cli.bench import available

# A broker address nobody answers at: an argument error must come before any connection.
NO_KAFKA = {"SKEWLESS_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1", "SKEWLESS_REDIS_URL": "redis://127.0.0.1:1/0"}


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "cli", "bench", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200", **(env or {})}, timeout=120)


def test_freshness_is_registered_and_listed():
    assert "freshness" in available()
    r = run()
    assert r.returncode == 0, r.stderr
    assert "freshness" in json.loads(r.stdout.strip().splitlines()[-1])["benchmarks"]


def test_help_names_the_rates_option():
    r = run("--help")
    assert r.returncode == 0, r.stderr
    assert "--rates" in r.stdout
    assert "freshness" in r.stdout


@pytest.mark.parametrize("args, message", [
    (("--rates", "0,5000"), "--rates must be events/s in (0, 50,000], got 0"),
    (("--rates", "1000,-5"), "got -5"),
    (("--rates", "100000"), "got 100000"),
    (("--rates", "fast"), "--rates takes events/s separated by commas"),
    (("--rates", ","), "--rates takes events/s separated by commas"),
    (("--rates", "1000,1000"), "--rates names a rate twice"),
    (("--rates", "nan"), "--rates must be events/s"),
    (("--duration", "2"), "--duration must be at least 5 s per rate"),
    (("--size", "10"), "--size is the catch-up backlog in events for freshness: at least 1,000"),
])
def test_bad_arguments_are_one_clear_line_before_any_service(args, message):
    r = run("freshness", *args, env=NO_KAFKA)
    assert r.returncode != 0
    assert message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert "Kafka" not in r.stderr and "Redis" not in r.stderr  # refused before connecting to anything
    assert [ln for ln in r.stderr.splitlines() if ln.strip()] == [r.stderr.strip().splitlines()[0]]


def test_rates_is_refused_by_a_benchmark_without_rates():
    r = run("ingest", "--rates", "1000", env=NO_KAFKA)
    assert r.returncode != 0
    assert "benchmark 'ingest' takes no --rates" in r.stderr
    assert "Traceback" not in r.stderr
