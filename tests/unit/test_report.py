"""``skewless monitor report`` without services: from an empty state every section says
why it has no data; from a populated one (a drift reference and a champion in a local
MLflow store, predictions landed in the lake and a drift check of them, dead letters, a
saved served-consistency result, a feature-table check report) every section is drawn
from what was saved — and no raw row reaches the page."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from ingestion.batch import DEAD_LETTER_SCHEMA
from monitoring.live_drift import check_drift
from monitoring.report import SECTIONS, monitor_report, reason_group
from monitoring.report_html import display_numeric
from monitoring.served_consistency import save_report
from skewless.histograms import NumericHistogram
from skewless.lake_layout import LakeLayout
from skewless.registry import ensure_experiment, mlflow_client, promote, register
from skewless.settings import load_settings
from tests.integration.lake_fixtures import land
from training.tracking import log_drift_reference

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 10, 12, 0, tzinfo=timezone.utc)
FEATURES = ["spend__mean_1h", "spend__count_1h"]


def _config(tmp_path: Path) -> Path:
    cfg = tmp_path / "skewless.yaml"
    cfg.write_text(yaml.safe_dump({"lake_path": str(tmp_path / "lake"), "state_dir": str(tmp_path / "state"),
                                   "online_store": "sqlite"}))
    return cfg


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


class _Sections(HTMLParser):
    """Section ids, their text, and tags that would load or run anything."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, str] = {}
        self.current: str | None = None
        self.svgs = 0
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.current = a.get("id")
            self.sections[self.current] = ""
        if tag == "svg":
            self.svgs += 1
        if tag in ("script", "link", "img", "iframe") or (tag != "svg" and a.get("src")):
            self.external.append(tag)

    def handle_data(self, data):
        if self.current is not None:
            self.sections[self.current] += data


def _parse(path: Path) -> _Sections:
    p = _Sections()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def test_reason_groups_name_the_check_not_the_value():
    assert reason_group("check transactions.channel.allowed: channel must be one of pos, web, app, got 'fax'") == \
        "check transactions.channel.allowed"
    assert reason_group("not valid JSON: Expecting value: line 1") == "not valid JSON"
    assert reason_group("field 'amount' must be a number, got str") == "field 'amount' must be a number"
    assert reason_group("event is 70,123 bytes, over the transactions contract's limit") == \
        reason_group("event is 80,000 bytes, over the transactions contract's limit")
    assert reason_group("") == "(no reason)"


def test_display_densities_hold_the_mass_between_the_display_quantiles():
    rng = np.random.default_rng(0)
    for values, log_expected in ((rng.normal(5, 2, 50_000), False), (rng.lognormal(3, 1.2, 50_000), True)):
        ref = NumericHistogram.reference(values)
        live = ref.bin(values + 1.0)
        edges, d_ref, d_live, log_x = display_numeric(ref, live)
        assert log_x is log_expected
        widths = np.diff(np.log1p(edges)) if log_x else np.diff(edges)
        assert 0.98 <= float((d_ref * widths).sum()) <= 1.0  # 0.5%..99.5% of both samples is shown
        assert 0.97 <= float((d_live * widths).sum()) <= 1.0


def test_report_from_an_empty_state_says_why_each_section_is_empty(tmp_path):
    cfg = _config(tmp_path)
    r = _cli("monitor", "report", "--out", str(tmp_path / "out"), "--config", str(cfg), "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert not any(summary["sections"].values())
    assert "skewless monitor drift" in summary["missing"]["distributions"]
    assert "skewless check consistency --served" in summary["missing"]["served-consistency"]
    page = _parse(Path(summary["path"]))
    assert list(page.sections) == list(SECTIONS)
    for sid in SECTIONS[1:]:
        assert "No " in page.sections[sid], sid
    assert page.external == []
    assert not (tmp_path / "state").exists()  # reading an empty state creates nothing


@pytest.fixture(scope="module")
def populated(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    cfg = _config(tmp)
    settings = load_settings(cfg)
    # a trained champion with its drift reference and test metrics (bootstrap intervals on one)
    client = mlflow_client(settings)
    run_id = client.create_run(ensure_experiment(settings, "report-test")).info.run_id
    rng = np.random.default_rng(1)
    ref = pd.DataFrame({"spend__mean_1h": rng.normal(50.0, 10.0, 5000), "spend__count_1h": rng.poisson(2.0, 5000)
                        .astype(float), "score": rng.beta(1, 20, 5000)})
    log_drift_reference(settings, run_id, ref, FEATURES, ref["score"].to_numpy(), model_version="v1")
    client.log_param(run_id, "chosen_model", "hgb")
    for k, v in {"hgb.pr_auc": 0.61, "hgb.pr_auc_ci_low": 0.55, "hgb.pr_auc_ci_high": 0.66, "hgb.cost": 1234.0,
                 "logreg.pr_auc": 0.4}.items():
        client.log_metric(run_id, k, v)
    promote(settings, register(settings, run_id))
    # live predictions: the mean moved by 1.5 sigma, so the check flags it
    live = pd.DataFrame({"spend__mean_1h": rng.normal(65.0, 10.0, 1500),
                         "spend__count_1h": rng.poisson(2.0, 1500).astype(float), "score": rng.beta(1, 20, 1500)})
    events = []
    raw_values = []
    for i, row in enumerate(live.itertuples(index=False)):
        at = T0 + timedelta(seconds=i)
        raw_values.append(row.spend__mean_1h)
        events.append({"request_id": uuid.uuid4().hex, "transaction_id": f"t{i}", "user_id": "u", "merchant_id": "m",
                       "amount": 10.0, "event_time": at.isoformat(), "predicted_at": at.isoformat(),
                       "model_name": "m", "model_version": "v1", "feature_service": "svc",
                       "score": float(row.score), "review": False,
                       "features": {"spend__mean_1h": row.spend__mean_1h, "spend__count_1h": row.spend__count_1h}})
    land(settings, "predictions", events, tag="r")
    for h in range(3):  # three windows: drift over time
        check_drift(settings, since=T0 + timedelta(minutes=8 * h), window="8m", now=T0 + timedelta(hours=1))
    # dead letters: two reasons of one check, one parse error
    layout = LakeLayout.of(settings)
    reasons = ["check transactions.channel.allowed: channel must be one of pos, web, app, got 'fax'",
               "check transactions.channel.allowed: channel must be one of pos, web, app, got 'tv'",
               "not valid JSON: Expecting value: line 1 column 1 (char 0)"]
    table = pa.Table.from_pylist([{"topic": "transactions", "partition": 0, "offset": i, "key": None,
                                   "value": b"{}", "reason": r, "kafka_timestamp_ms": None,
                                   "_ingested_at": T0} for i, r in enumerate(reasons)], schema=DEAD_LETTER_SCHEMA)
    layout.dead_letter_dir("transactions").mkdir(parents=True)
    pq.write_table(table, layout.dead_letter_dir("transactions") / "transactions+0+0-2.parquet")
    save_report(settings, {"at": "event_time", "predictions": 1500, "compared_predictions": 1400,
                           "not_yet_covered": 100, "features": {
                               "spend__mean_1h": {"compared": 1400, "matches": 1397, "mismatches": 3, "missing": 0,
                                                  "extra": 0, "smape_pct": 0.2}},
                           "totals": {"compared": 1400, "matches": 1397, "mismatches": 3, "missing": 0, "extra": 0}})
    layout.quality_dir.mkdir(parents=True)
    (layout.quality_dir / "etl-20260310T120000000000Z.json").write_text(json.dumps({
        "start": "2026-03-09", "end": "2026-03-10", "views": {"spend": {"checks": 7, "failed": [
            {"check": "spend.mean_1h.min", "count": 3, "description": "below the declared range"}]}}}))
    out = monitor_report(settings, tmp / "out")
    return settings, out, raw_values


def test_report_draws_every_section_from_the_saved_results(populated):
    settings, out, _ = populated
    assert out["sections"] == {**{k: True for k in out["sections"]}, "freshness": False}
    assert out["drift_checks"] == 3 and out["drifted"]
    page = _parse(Path(out["path"]))
    assert list(page.sections) == list(SECTIONS)
    assert page.external == []  # nothing loaded, nothing run
    text = page.sections
    assert "DRIFT" in text["overview"]
    html = Path(out["path"]).read_text()
    for name in FEATURES:
        assert f'data-feature="{name}"' in html
    # the flagged feature's card is marked, the quiet one is not
    assert re.search(r'class="card feature drift" data-feature="spend__mean_1h"', html)
    assert 'class="card feature" data-feature="spend__count_1h"' in html
    assert "check transactions.channel.allowed" in text["data-quality"] and "not valid JSON" in text["data-quality"]
    assert "spend.mean_1h.min (3)" in text["data-quality"]
    assert "3 differ" in text["served-consistency"]
    assert "champion v1" in text["models"] and "No challenger yet" in text["models"]
    assert "0.61 [0.55, 0.66]" in text["models"]
    assert "No freshness figures" in text["freshness"]
    assert page.svgs >= 2 + 1 + 2 + 1 + 1  # features, score, heatmap + line, dead letters, intervals


def test_no_raw_row_reaches_the_page(populated):
    _, out, raw_values = populated
    html = Path(out["path"]).read_text()
    # a logged feature value printed to full precision would be a raw row in the page
    leaked = [v for v in raw_values if repr(float(v)) in html]
    assert leaked == []
