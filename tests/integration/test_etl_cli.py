"""``skewless etl run`` from the command line: JSON summary, backfill of a range,
incremental no-op, clear one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone

import pandas as pd
import pytest
import yaml

from skewless.lake_layout import LakeLayout
from tests.integration.lake_fixtures import land_simulation

pytestmark = pytest.mark.integration

START = datetime(2026, 8, 1, tzinfo=timezone.utc)


def etl(cfg, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", "etl", "run", "--config", str(cfg), *args],
                          capture_output=True, text=True, timeout=600)


def test_etl_run_backfills_a_range_then_runs_incrementally(tmp_path):
    cfg = tmp_path / "skewless.yaml"
    cfg.write_text(yaml.safe_dump({"lake_path": str(tmp_path / "lake"), "state_dir": str(tmp_path / "state")}))
    from skewless.settings import load_settings

    land_simulation(load_settings(cfg), events=1_500, seed=9, start=START, days=2)
    out = etl(cfg, "--start", "2026-08-02", "--end", "2026-08-03", "--master", "local[2]", "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert (summary["start"], summary["end"], summary["master"]) == ("2026-08-02", "2026-08-03", "local[2]")
    assert summary["views"]["user_spend"]["rows"] > 0
    dates = {str(d) for d in pd.read_parquet(LakeLayout(tmp_path / "lake").features_dir("user_spend"))["date"].unique()}
    assert dates == {"2026-08-02"}  # only the requested range was written

    first = etl(cfg, "--json")  # incremental: a range backfill set no watermark, so everything
    assert first.returncode == 0, first.stderr[-3000:]
    assert json.loads(first.stdout.strip().splitlines()[-1])["start"] == "2026-08-01"
    again = etl(cfg, "--json")  # nothing landed since: a no-op
    assert json.loads(again.stdout.strip().splitlines()[-1])["skipped"]


def test_etl_run_errors_are_one_clear_line(tmp_path):
    cfg = tmp_path / "skewless.yaml"
    cfg.write_text(yaml.safe_dump({"lake_path": str(tmp_path / "empty-lake"), "state_dir": str(tmp_path / "state")}))
    bad_date = etl(cfg, "--start", "first of May")
    assert bad_date.returncode == 2 and "--start must be a date" in bad_date.stderr
    no_data = etl(cfg)
    assert no_data.returncode != 0 and "no raw events" in no_data.stderr and "Traceback" not in no_data.stderr
