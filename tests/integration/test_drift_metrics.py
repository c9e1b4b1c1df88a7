"""``/metrics`` exports the latest drift check: simulated traffic whose amounts shift
(``skewless ingest produce --drift amount-shift``) is logged as the champion's predictions,
``skewless monitor drift`` (``check_drift``) compares it with the training run's reference,
and the app's gauges show that check's figures — read from the status file the check
leaves, the app importing nothing of monitoring. Real Feast registry and Redis (a project
of this module only), MLflow in the test's state dir."""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from ingestion.simulator import simulate
from monitoring.live_drift import check_drift
from serving.app import create_app
from skewless.features import store as feast_store
from skewless.features.definitions import load as load_definitions
from skewless.lake_layout import LakeLayout
from skewless.registry import ensure_experiment, mlflow_client
from tests.integration.lake_fixtures import land
from tests.isolation import isolated_settings
from training.tracking import log_drift_reference

START = datetime(2026, 3, 1, tzinfo=timezone.utc)
DRIFT_AT = START + timedelta(days=7)
END = START + timedelta(days=14)
PER_CHECK = 2_000  # predictions logged per live window


def _scores(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).beta(1, 30, n)


@pytest.fixture(scope="module")
def env(services, tmp_path_factory):
    settings = isolated_settings(services, tmp_path_factory.mktemp("drift-metrics"),
                                 feast_project=f"dm{uuid.uuid4().hex[:10]}", serving={"log_predictions": False})
    store = feast_store.feature_store(settings)
    feast_store.apply(settings, load_definitions(settings), store)
    # The training run's reference: a week of undrifted traffic's amounts, and scores.
    undrifted = [t for t in simulate(12_000, 5, START, 14).transactions if t["event_time"] < "2026-03-08"]
    reference = {"amount": np.array([t["amount"] for t in undrifted])}
    run_id = mlflow_client(settings).create_run(ensure_experiment(settings, "drift-metrics")).info.run_id
    import pandas as pd

    log_drift_reference(settings, run_id, pd.DataFrame(reference), ["amount"], _scores(1, 4000), model_version="7")
    # The second week, as predictions of model version 7: amounts shifted (x1.5) from day 7.
    drifted = [t for t in simulate(12_000, 5, START, 14, drift="amount-shift", drift_start=DRIFT_AT).transactions
               if t["event_time"] >= "2026-03-08"]
    try:
        yield settings, store, run_id, drifted
    finally:
        store._get_provider().teardown_infra(store.project, tables=store.list_feature_views(),
                                              entities=store.list_entities())


def _log(settings, transactions: list[dict], at: datetime, seed: int) -> None:
    """``transactions`` scored one second apart from ``at``, as serving logs them."""
    events = []
    for i, (t, score) in enumerate(zip(transactions, _scores(seed, len(transactions)))):
        when = (at + timedelta(seconds=i)).isoformat()
        events.append({"request_id": uuid.uuid4().hex, "transaction_id": t["transaction_id"], "user_id": t["user_id"],
                       "merchant_id": t["merchant_id"], "amount": t["amount"], "event_time": t["event_time"],
                       "predicted_at": when, "model_name": "fraud", "model_version": "7", "feature_service": "svc",
                       "score": float(score), "review": False, "features": {"amount": t["amount"]}})
    land(settings, "predictions", events, tag=uuid.uuid4().hex[:8])


def _scrape(client: TestClient) -> dict:
    """{(name, feature or None): value} of the drift gauges."""
    resp = client.get("/metrics")
    assert resp.status_code == 200, resp.text
    return {(s.name, s.labels.get("feature")): s.value
            for family in text_string_to_metric_families(resp.text) for s in family.samples
            if s.name.startswith("skewless_drift_")}


def _expected(result: dict) -> dict:
    """The gauges a check's result should give."""
    out = {("skewless_drift_detected", None): 1.0 if result["drifted"] else 0.0,
           ("skewless_drift_checked_timestamp_seconds", None): datetime.fromisoformat(result["checked_at"]).timestamp(),
           ("skewless_drift_window_end_timestamp_seconds", None):
               datetime.fromisoformat(result["window"]["end"]).timestamp(),
           ("skewless_drift_predictions", None): float(result["predictions"]),
           ("skewless_drift_status_readable", None): 1.0}
    for f in result["features"]:
        dist, miss = f["signals"]
        out[("skewless_drift_score", f["name"])] = dist["value"]
        out[("skewless_drift_missing_rate_change", f["name"])] = miss["value"]
        out[("skewless_drift_flagged", f["name"])] = 1.0 if f["drifted"] else 0.0
    return out


def test_metrics_show_the_latest_drift_check_and_follow_it_without_a_restart(env):
    settings, store, run_id, drifted = env
    latest = LakeLayout.of(settings).drift_latest_path
    with TestClient(create_app(settings, store)) as client:
        # No check yet: unknown, not "no drift".
        before = _scrape(client)
        assert math.isnan(before[("skewless_drift_detected", None)])
        assert math.isnan(before[("skewless_drift_checked_timestamp_seconds", None)])
        assert before[("skewless_drift_status_readable", None)] == 1
        assert not any(feature for _, feature in before)

        # Undrifted traffic (the first week's, logged on day 8): no drift, every gauge says so.
        quiet_at = START + timedelta(days=8)
        undrifted = [t for t in simulate(12_000, 5, START, 14).transactions if t["event_time"] >= "2026-03-08"]
        _log(settings, undrifted[:PER_CHECK], quiet_at, seed=2)
        quiet = check_drift(settings, run_id, since=quiet_at, window="1h", now=quiet_at + timedelta(hours=1))
        assert not quiet["drifted"] and quiet["latest"]
        got = _scrape(client)
        assert got == _expected(quiet)
        assert got[("skewless_drift_flagged", "amount")] == 0 and got[("skewless_drift_flagged", "score")] == 0

        # The drifted week (amounts x1.5), logged on day 9: the next scrape shows it.
        drift_at = START + timedelta(days=9)
        _log(settings, drifted[:PER_CHECK], drift_at, seed=3)
        shifted = check_drift(settings, run_id, since=drift_at, window="1h", now=drift_at + timedelta(hours=1))
        assert shifted["drifted_features"] == ["amount"]
        got = _scrape(client)
        assert got == _expected(shifted)
        assert got[("skewless_drift_detected", None)] == 1
        assert got[("skewless_drift_flagged", "amount")] == 1 and got[("skewless_drift_flagged", "score")] == 0
        assert got[("skewless_drift_score", "amount")] > 0.5  # W1 in the reference's robust sigmas
        assert got[("skewless_drift_predictions", None)] == PER_CHECK
        assert got[("skewless_drift_checked_timestamp_seconds", None)] == (drift_at + timedelta(hours=1)).timestamp()

        # A check of older traffic, run later, leaves the latest figures alone.
        again = check_drift(settings, run_id, since=quiet_at, window="1h", now=drift_at + timedelta(hours=2))
        assert again["latest"] is False
        assert _scrape(client) == _expected(shifted)

        # An unreadable status file: /metrics answers, says so, and keeps the last figures.
        good = latest.read_text()
        latest.write_text("{not json")
        broken = _scrape(client)
        assert broken[("skewless_drift_status_readable", None)] == 0
        assert broken == {**_expected(shifted), ("skewless_drift_status_readable", None): 0.0}
        latest.write_text(good)
        assert _scrape(client) == _expected(shifted)
