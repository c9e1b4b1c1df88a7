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


def test_drift_benchmark_prints_its_table_and_ends_with_its_figures():
    r = run("drift", "--size", "1000", "--trials", "2")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["benchmark"] == "drift" and out["trials"] == 2 and out["sizes"] == [100, 1000]
    assert set(out["targets_ours"]) == {"power_0.5sigma_ge_0.9", "false_positives_le_5pct",
                                        "false_positives_le_5pct_bursty", "stable_as_n_grows"}
    for detector in ("ours", "rows_independent", "baseline_ks", "fixed_thresholds"):
        assert 0 <= out[detector]["1000"]["power_mean_0.5"] <= 1
        assert 0 <= out[detector]["1000"]["fp_bursts_dataset"] <= 1
    assert "targets (every n)" in r.stderr and "raw KS" in r.stderr


def test_scale_takes_events_and_refuses_too_few_before_touching_a_service():
    r = run("scale", "--events", "100", "--json")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["error: bench scale needs --events >= 20,000 (its baseline is a tenth of it)"]
    assert r.stdout == ""
