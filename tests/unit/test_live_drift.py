"""``skewless monitor drift`` end to end without services: a drift reference saved with an
MLflow run (local SQLite store) as training saves it, predictions landed in a lake in the
real layout, and the check between them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from monitoring.live_drift import check_drift, live_window
from skewless.errors import ConfigError, DataError
from skewless.registry import ModelNotFoundError, ensure_experiment, mlflow_client
from skewless.settings import load_settings
from tests.integration.lake_fixtures import land
from training.tracking import log_drift_reference

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=timezone.utc)
NOW = T0 + timedelta(hours=1)
N = 1500


def _frame(seed: int, n: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"spend__mean_1h": rng.normal(50.0, 10.0, n) + 10.0 * shift,
                         "spend__count_1h": rng.poisson(2.0, n).astype(float),
                         "score": rng.beta(1, 20, n)})


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("drift")
    settings = load_settings(None).model_copy(update={"lake_path": str(tmp / "lake"), "state_dir": tmp / "state"})
    client = mlflow_client(settings)
    run_id = client.create_run(ensure_experiment(settings, "drift-test")).info.run_id
    ref = _frame(1, 5000)
    log_drift_reference(settings, run_id, ref, ["spend__mean_1h", "spend__count_1h"], ref["score"].to_numpy(),
                        model_version="v1")
    return settings, run_id


def _log(settings, frame: pd.DataFrame, start: datetime, version: str = "v1", drop: str | None = None,
         users: list[str] | None = None) -> None:
    events = []
    for i, row in enumerate(frame.itertuples(index=False)):
        at = start + timedelta(seconds=i)
        features = {"spend__mean_1h": row.spend__mean_1h, "spend__count_1h": row.spend__count_1h}
        if drop:
            features.pop(drop)
        user = users[i] if users else "u"
        events.append({"request_id": uuid.uuid4().hex, "transaction_id": f"t{i}", "user_id": user, "merchant_id": "m",
                       "amount": 10.0, "event_time": at.isoformat(), "predicted_at": at.isoformat(),
                       "model_name": "m", "model_version": version, "feature_service": "svc",
                       "score": float(row.score), "review": False, "features": features})
    land(settings, "predictions", events, tag=uuid.uuid4().hex[:8])


def test_a_shift_in_the_live_window_is_flagged_and_a_quiet_one_is_not(env):
    settings, run_id = env
    _log(settings, _frame(2, N), T0 - timedelta(days=2))  # quiet traffic, two days ago
    _log(settings, _frame(3, N, shift=0.5), T0)  # the last hour: the mean moved by half a sigma
    _log(settings, _frame(4, 300), T0 + timedelta(minutes=5), version="v0")  # an older model's, not compared

    quiet = check_drift(settings, run_id, since=T0 - timedelta(days=2), window="1h")
    assert not quiet["drifted"] and quiet["predictions"] == N and quiet["other_model_versions"] == 0
    assert {f["name"] for f in quiet["features"]} == {"spend__mean_1h", "spend__count_1h", "score"}

    live = check_drift(settings, run_id, window="2h", now=NOW)
    assert live["drifted_features"] == ["spend__mean_1h"]
    assert live["predictions"] == N and live["other_model_versions"] == 300
    mean = next(f for f in live["features"] if f["name"] == "spend__mean_1h")
    assert 0.4 < mean["signals"][0]["value"] < 0.6  # in reference sigmas
    saved = json.loads(open(live["saved"]).read())
    assert saved["drifted_features"] == ["spend__mean_1h"]
    assert len(saved["live_histograms"]["spend__mean_1h"]["counts"]) < 120  # histograms, not rows


def test_a_feature_the_log_stops_carrying_is_flagged_as_turning_null(env):
    settings, run_id = env
    start = T0 + timedelta(days=3)
    _log(settings, _frame(5, N), start, drop="spend__count_1h")
    r = check_drift(settings, run_id, since=start, window="1h", save=False)
    assert r["drifted_features"] == ["spend__count_1h"]
    count = next(f for f in r["features"] if f["name"] == "spend__count_1h")
    assert count["missing_rate_live"] == 1.0 and count["signals"][1]["drifted"]


def test_dependent_rows_are_measured_on_both_sides_and_allowed_for(env):
    """Training saves the reference's design effects (its cards within a day); a check measures
    the live sample's on the prediction log's user_id: a window whose rows come in bursts of 4
    identical vectors on one card shows an effect of 4, and its p-values allow for it."""
    settings, _ = env
    client = mlflow_client(settings)
    run_id = client.create_run(ensure_experiment(settings, "drift-test")).info.run_id
    ref = _frame(7, 2000)
    ref["user_id"] = [f"r{i % 700}" for i in range(len(ref))]
    ref["event_timestamp"] = pd.date_range(T0 - timedelta(days=20), periods=len(ref), freq="5min", tz="UTC")
    doc = log_drift_reference(settings, run_id, ref, ["spend__mean_1h", "spend__count_1h"], ref["score"].to_numpy(),
                              model_version="v1")
    assert doc["clusters"] == {"key": "user_id", "block": "24h"}
    assert set(doc["design_effects"]) == {"spend__mean_1h", "spend__count_1h"}
    assert all(1.0 <= e["distribution"] < 1.5 for e in doc["design_effects"].values())  # independent rows

    start = T0 + timedelta(days=8)
    bursts = _frame(8, 400).loc[np.repeat(np.arange(400), 4)].reset_index(drop=True)
    _log(settings, bursts, start, users=[f"c{i // 4}" for i in range(len(bursts))])
    r = check_drift(settings, run_id, since=start, window="1h", save=False)
    assert r["clusters"] == {"key": "user_id", "block": "24h"}
    assert r["design_effects"]["reference"] == doc["design_effects"]
    live = r["design_effects"]["live"]
    assert live["spend__mean_1h"]["distribution"] == pytest.approx(4.0) and live["score"]["distribution"] == pytest.approx(4.0)
    mean = next(f for f in r["features"] if f["name"] == "spend__mean_1h")["signals"][0]
    assert mean["inflation"] > 2  # (e_ref / n_ref + 4 / n_live) / (1 / n_ref + 1 / n_live)
    assert not r["drifted"]


def test_no_predictions_in_the_window_and_a_run_without_reference_are_clear_errors(env):
    settings, run_id = env
    with pytest.raises(DataError, match="no predictions by model version v1 between"):
        check_drift(settings, run_id, since=T0 + timedelta(days=30), window="1h")
    bare = mlflow_client(settings).create_run(ensure_experiment(settings, "drift-test")).info.run_id
    with pytest.raises(DataError, match=f"run {bare} has no drift reference"):
        check_drift(settings, bare)
    with pytest.raises(ModelNotFoundError, match="has no champion"):
        check_drift(settings)


def test_the_live_window():
    s = load_settings(None)
    assert live_window(s, None, None, NOW) == (NOW - timedelta(hours=24), NOW)
    assert live_window(s, None, "90m", NOW) == (NOW - timedelta(minutes=90), NOW)
    assert live_window(s, T0, None, NOW) == (T0, NOW)
    assert live_window(s, T0, "7d", NOW) == (T0, T0 + timedelta(days=7))
    with pytest.raises(ConfigError, match="window must be a duration"):
        live_window(s, None, "a week", NOW)


def test_the_command_prints_a_table_and_ends_with_json(env):
    settings, run_id = env
    start = T0 + timedelta(days=5)
    _log(settings, _frame(6, N), start, drop="spend__count_1h")
    cfg = settings.state_dir.parent / "skewless.yaml"
    cfg.write_text(f"lake_path: {settings.lake_path}\nstate_dir: {settings.state_dir}\n")
    r = subprocess.run([sys.executable, "-m", "cli", "monitor", "drift", "--config", str(cfg), "--reference", run_id,
                        "--since", start.isoformat(), "--window", "1h", "--json"],
                       capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["drifted_features"] == ["spend__count_1h"]
    assert "drift in spend__count_1h" in r.stderr and "DRIFT" in r.stderr
    bad = subprocess.run([sys.executable, "-m", "cli", "monitor", "drift", "--config", str(cfg), "--window", "x"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "window must be a duration like 24h" in bad.stderr and "Traceback" not in bad.stderr
