"""``skewless bench``: discovers the benchmarks, and an unknown name is a clear error."""

import json
import os
import subprocess
import sys

from cli.bench import available


def run(*args):
    return subprocess.run([sys.executable, "-m", "cli", "bench", *args], capture_output=True,
                          text=True, env={**os.environ, "COLUMNS": "200"}, timeout=120)


def test_benchmarks_are_discovered():
    assert "ingest" in available()


def test_help_lists_the_benchmarks():
    r = run("--help")
    assert r.returncode == 0, r.stderr
    assert "--size" in r.stdout
    for name in available():
        assert name in r.stdout


def test_without_name_lists_them_as_json():
    r = run()
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {"benchmarks": available()}


def test_unknown_benchmark_is_one_clear_line_and_nonzero():
    r = run("no-such-bench", "--size", "10")
    assert r.returncode != 0
    assert "unknown benchmark 'no-such-bench'" in r.stderr
    assert "ingest" in r.stderr  # the choices are named
    assert "Traceback" not in r.stderr
