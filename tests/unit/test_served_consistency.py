"""Consistency as served, on a small synthetic lake in the real layout: predictions landed
as the ``predictions`` topic, offline feature tables as Parquet where the ETL writes
them, the ETL's state, and raw transactions for what the batch job has read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from monitoring.served_consistency import check_served, coverage, in_sample
from skewless.errors import DataError
from skewless.features.dsl import Aggregation as A
from skewless.features.dsl import Entity, EventSource, FeatureServiceSpec, RequestInput, RequestTransform, WindowedView
from skewless.lake_layout import LakeLayout
from skewless.settings import load_settings
from tests.integration.lake_fixtures import land

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=timezone.utc)
H = timedelta(hours=1)
M = timedelta(minutes=1)

user = Entity("user", "user_id")
merchant = Entity("merchant", "merchant_id")
transactions = EventSource("transactions", contract="transactions", time_column="event_time")
spend = WindowedView("spend", (user,), transactions, hop="1m",
                     aggregations=(A("count", "1h"), A("mean", "1h", "amount")))
activity = WindowedView("activity", (merchant,), transactions, hop="5m", aggregations=(A("count", "24h"),))


def _request(cols):
    def col(name):
        return np.asarray(cols[name], dtype="float64")

    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = col("amount") / col("spend__mean_amount_1h")
    out = {"amount_vs_mean": np.where(np.isinf(ratio), np.nan, ratio),
           "busy_merchant": (np.nan_to_num(col("activity__count_24h")) > 2).astype("int64"),
           "minute_of_hour": np.floor(col("event_epoch") % 3600 / 60)}
    return pd.DataFrame(out, index=cols.index) if isinstance(cols, pd.DataFrame) else out


request = RequestTransform(
    "req", request_inputs=(RequestInput("amount", "amount", as_feature=True),
                           RequestInput("event_epoch", "event_time", derive="epoch_seconds")),
    inputs=(("spend", "mean_amount_1h"), ("activity", "count_24h")),
    outputs={"amount_vs_mean": "float64", "busy_merchant": "int64", "minute_of_hour": "float64"},
    function=_request, arrays=True)
SERVICE = FeatureServiceSpec("svc", views=(spend, activity), transforms=(request,))

# The offline tables: rows where values change, as the ETL writes them.
SPEND = [  # user, time, count_1h, mean_amount_1h
    ("u1", T0 - 2 * H, 1, 10.0), ("u1", T0 - H, 3, 20.0), ("u1", T0, 2, 25.0), ("u1", T0 + H, 0, None),
    ("u2", T0 - H, 1, 5.0),
]
ACTIVITY = [("m1", T0 - 3 * H, 5), ("m1", T0 + 2 * H, 1), ("m2", T0 - H, 2)]


def _settings(tmp_path: Path):
    return load_settings(None).model_copy(update={"lake_path": str(tmp_path / "lake"), "state_dir": tmp_path / "state"})


def _table(settings, view: WindowedView, rows, columns) -> None:
    frame = pd.DataFrame(rows, columns=[*view.join_keys, "event_timestamp", *columns])
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True).astype("datetime64[us, UTC]")
    for name, group in frame.groupby(frame["event_timestamp"].dt.date):
        d = LakeLayout.of(settings).features_dir(view.name) / f"date={name}"
        d.mkdir(parents=True, exist_ok=True)
        types = {"count_1h": pa.int64(), "count_24h": pa.int64(), "mean_amount_1h": pa.float64()}
        schema = pa.schema([*(pa.field(k, pa.string()) for k in view.join_keys),
                            pa.field("event_timestamp", pa.timestamp("us", tz="UTC")),
                            *(pa.field(c, types[c]) for c in columns)])
        pq.write_table(pa.Table.from_pandas(group, schema=schema, preserve_index=False), d / "part-00000.parquet")


def _tx(user_id: str, merchant_id: str, at: datetime) -> dict:
    return {"transaction_id": f"t-{uuid.uuid4().hex[:8]}", "user_id": user_id, "merchant_id": merchant_id,
            "amount": 10.0, "currency": "EUR", "country": "DE", "channel": "web", "device_id": "d",
            "event_time": at.isoformat()}


@pytest.fixture
def lake(tmp_path):
    """A lake the batch job has read up to now: raw transactions, offline tables, state."""
    settings = _settings(tmp_path)
    land(settings, "transactions", [_tx("u1", "m1", T0 - 2 * H - M), _tx("u2", "m2", T0 - H - M)], tag="old")
    _table(settings, spend, SPEND, ["count_1h", "mean_amount_1h"])
    _table(settings, activity, ACTIVITY, ["count_24h"])
    state = LakeLayout.of(settings).etl_state_path
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"started_at": time.time(), "range": ["2026-03-01", "2026-04-12"]}))
    return settings


def _offline(user_id: str, merchant_id: str, at: datetime) -> dict:
    """The point-in-time values by hand (the latest row at or before ``at``)."""
    s = [r for r in SPEND if r[0] == user_id and r[1] <= at]
    a = [r for r in ACTIVITY if r[0] == merchant_id and r[1] <= at]
    count, mean = (s[-1][2], s[-1][3]) if s else (None, None)
    busy = a[-1][2] if a else None
    return {"spend__count_1h": count, "spend__mean_amount_1h": mean, "activity__count_24h": busy}


def _served(user_id: str, merchant_id: str, at: datetime, amount: float, **override) -> dict:
    v = _offline(user_id, merchant_id, at)
    mean = v["spend__mean_amount_1h"]
    features = {**v, "amount": amount,
                "req__amount_vs_mean": None if mean is None else amount / mean,
                "req__busy_merchant": int((v["activity__count_24h"] or 0) > 2),
                "req__minute_of_hour": float(at.minute)}
    features.update(override)
    return {k: (float(x) if isinstance(x, int) else x) for k, x in features.items()}  # serving logs floats


def _prediction(user_id: str, merchant_id: str, at: datetime, amount: float = 40.0, request_id: str | None = None,
                predicted_at: datetime | None = None, features: dict | None = None, service: str = "svc") -> dict:
    return {"request_id": request_id or uuid.uuid4().hex, "transaction_id": f"t-{uuid.uuid4().hex[:8]}",
            "user_id": user_id, "merchant_id": merchant_id, "amount": amount, "event_time": at.isoformat(),
            "predicted_at": (predicted_at or at + timedelta(seconds=1)).isoformat(), "model_name": "m",
            "model_version": "1", "feature_service": service, "score": 0.5, "review": False,
            "features": _served(user_id, merchant_id, at, amount) if features is None else features}


def _log(settings, predictions: list[dict], tag: str = "p") -> None:
    land(settings, "predictions", predictions, tag=tag)


def test_served_values_equal_to_the_offline_point_in_time_values_are_zero_mismatches(lake):
    # Between rows, exactly at a row, before any row of the user (null == null), an unknown merchant.
    times = [T0 - 90 * M, T0 - H, T0 + 30 * M, T0 - 3 * H]
    _log(lake, [_prediction("u1", "m1", t) for t in times] + [_prediction("u2", "m-none", T0)])
    report = check_served(lake, [SERVICE])
    assert report["predictions"] == 5 and report["not_yet_covered"] == 0 and report["compared_predictions"] == 5
    assert set(report["features"]) == {"spend__count_1h", "spend__mean_amount_1h", "activity__count_24h", "amount",
                                       "req__amount_vs_mean", "req__busy_merchant", "req__minute_of_hour"}
    t = report["totals"]
    assert (t["compared"], t["matches"], t["mismatches"], t["missing"], t["extra"]) == (35, 35, 0, 0, 0)
    assert t["smape_pct"] == 0.0 and report["examples"] == []
    assert report["features"]["spend__count_1h"]["compared"] == 5


def test_a_stale_served_value_is_a_mismatch_with_its_example(lake):
    at = T0 + 10 * M  # offline: count 2, mean 25 (the row at T0); served: the row at T0 - 1h
    stale = _served("u1", "m1", T0 - H, 40.0)
    stale["req__minute_of_hour"] = 10.0  # the request's own time is right
    stale["amount"] = 40.0
    _log(lake, [_prediction("u1", "m1", at, request_id="r-stale", features=stale),
                _prediction("u1", "m1", at, request_id="r-fresh")])
    report = check_served(lake, [SERVICE])
    f = report["features"]
    assert f["spend__count_1h"] == {"compared": 2, "matches": 1, "mismatches": 1, "missing": 0, "extra": 0,
                                    "smape_pct": pytest.approx(100 * (2 * 1 / 5) / 2)}
    assert f["spend__mean_amount_1h"]["mismatches"] == 1
    # The on-demand ratio served from the stale mean differs from the one offline recomputes.
    assert f["req__amount_vs_mean"]["mismatches"] == 1 and f["req__amount_vs_mean"]["matches"] == 1
    assert f["activity__count_24h"]["mismatches"] == 0 and f["amount"]["mismatches"] == 0
    ex = next(e for e in report["examples"] if e["feature"] == "spend__count_1h")
    assert ex == {"kind": "mismatch", "feature": "spend__count_1h", "request_id": "r-stale",
                  "transaction_id": ex["transaction_id"], "entity": {"user_id": "u1"},
                  "event_time": at.isoformat(), "served": 3, "offline": 2}
    assert report["totals"]["mismatches"] == 3


def test_missing_and_extra(lake):
    at = T0 + 10 * M
    missing = _served("u1", "m1", at, 40.0, spend__count_1h=None)  # served NOT_FOUND, offline has 2
    extra = _served("u2", "m-none", at, 40.0, activity__count_24h=7.0)  # no offline row for m-none
    _log(lake, [_prediction("u1", "m1", at, request_id="r-miss", features=missing),
                _prediction("u2", "m-none", at, request_id="r-extra", features=extra)])
    report = check_served(lake, [SERVICE])
    f = report["features"]
    assert (f["spend__count_1h"]["missing"], f["spend__count_1h"]["matches"]) == (1, 1)
    assert (f["activity__count_24h"]["extra"], f["activity__count_24h"]["matches"]) == (1, 1)
    t = report["totals"]
    assert (t["missing"], t["extra"], t["mismatches"]) == (1, 1, 0)
    assert t["compared"] == t["matches"] + t["mismatches"] + t["missing"] + t["extra"] == 14
    kinds = {(e["kind"], e["request_id"], e["feature"]): e for e in report["examples"]}
    assert kinds[("missing", "r-miss", "spend__count_1h")]["served"] is None
    assert kinds[("missing", "r-miss", "spend__count_1h")]["offline"] == 2
    assert kinds[("extra", "r-extra", "activity__count_24h")]["entity"] == {"merchant_id": "m-none"}
    assert kinds[("extra", "r-extra", "activity__count_24h")]["offline"] is None


def test_predictions_after_events_the_batch_job_has_not_read_are_not_yet_covered(lake):
    # A file landed after the ETL run started, with an event at T0: values from T0 on are not final.
    land(lake, "transactions", [_tx("u1", "m1", T0)], tag="late")
    late = next(LakeLayout.of(lake).raw_dir(lake.topics.transactions).rglob("late.parquet"))
    started = json.loads(LakeLayout.of(lake).etl_state_path.read_text())["started_at"]
    os.utime(late, (started + 60, started + 60))  # landed after the run started, whatever the clock's grain
    wrong = _served("u1", "m1", T0, 40.0, spend__count_1h=99.0)
    _log(lake, [_prediction("u1", "m1", T0 - 30 * M), _prediction("u1", "m1", T0, features=wrong),
                _prediction("u1", "m1", T0 + H, features=wrong)])
    cov = coverage(lake, SERVICE.views)
    assert cov["covered_until"] == T0 and cov["decided_by"] == "landed_since_etl:transactions"
    assert cov["files_landed_since_etl"] == {"transactions": 1}
    report = check_served(lake, [SERVICE])
    # At T0 the value covers events before T0's hop boundary: still final; after it, not yet.
    assert (report["predictions"], report["compared_predictions"], report["not_yet_covered"]) == (3, 2, 1)
    assert report["features"]["spend__count_1h"]["mismatches"] == 1
    assert report["coverage"]["svc"]["covered_until"] == T0.isoformat()


def test_predictions_past_the_dates_the_etl_computed_are_not_yet_covered(lake):
    _log(lake, [_prediction("u1", "m1", T0), _prediction("u1", "m1", datetime(2026, 4, 12, 0, 1, tzinfo=timezone.utc))])
    report = check_served(lake, [SERVICE])
    assert (report["compared_predictions"], report["not_yet_covered"]) == (1, 1)
    assert report["coverage"]["svc"]["decided_by"] == "etl_range_end"


def test_on_demand_features_are_recomputed_from_offline_inputs_and_the_logged_request(lake):
    at = T0 + 17 * M + timedelta(seconds=59, microseconds=999_999)
    good = _prediction("u1", "m1", at, amount=50.0, request_id="r-good")
    assert good["features"]["req__amount_vs_mean"] == 2.0 and good["features"]["req__minute_of_hour"] == 17.0
    # Served from the right inputs but a wrong clock; and a busy flag from a missing input.
    clock = _prediction("u1", "m1", at, amount=50.0, request_id="r-clock",
                        features=_served("u1", "m1", at, 50.0, req__minute_of_hour=18.0))
    busy = _prediction("u1", "m1", at, amount=50.0, request_id="r-busy",
                       features=_served("u1", "m1", at, 50.0, activity__count_24h=None, req__busy_merchant=0.0))
    nearly = _prediction("u1", "m1", at, amount=50.0, request_id="r-nearly",
                         features=_served("u1", "m1", at, 50.0, req__amount_vs_mean=2.0 * (1 + 1e-12)))
    _log(lake, [good, clock, busy, nearly])
    report = check_served(lake, [SERVICE])
    f = report["features"]
    assert f["req__minute_of_hour"]["mismatches"] == 1  # r-clock
    assert f["req__busy_merchant"]["mismatches"] == 1 and f["activity__count_24h"]["missing"] == 1  # r-busy
    assert f["req__amount_vs_mean"]["mismatches"] == 0  # r-nearly is within 1e-9 relative
    ex = {(e["request_id"], e["feature"]): e for e in report["examples"]}
    assert ex[("r-clock", "req__minute_of_hour")]["served"] == 18 and ex[("r-clock", "req__minute_of_hour")]["offline"] == 17
    assert ex[("r-busy", "req__busy_merchant")]["entity"] == {"user_id": "u1", "merchant_id": "m1"}


def test_integers_are_compared_exactly_floats_to_1e9_relative(lake):
    at = T0 + 10 * M
    _log(lake, [_prediction("u1", "m1", at, features=_served("u1", "m1", at, 40.0, spend__count_1h=2.0 + 2e-15)),
                _prediction("u1", "m1", at, features=_served("u1", "m1", at, 40.0, spend__mean_amount_1h=25.0 + 1e-7))])
    f = check_served(lake, [SERVICE])["features"]
    assert f["spend__count_1h"]["mismatches"] == 1 and f["spend__mean_amount_1h"]["mismatches"] == 1


def test_each_request_id_counts_once_since_and_sample_pick_predictions(lake):
    p = _prediction("u1", "m1", T0, request_id="r-dup", predicted_at=T0 + H)
    _log(lake, [p], tag="a")
    _log(lake, [p], tag="b")  # a second copy (a replay) counts once
    _log(lake, [_prediction("u1", "m1", T0, predicted_at=T0 - H)], tag="c")
    report = check_served(lake, [SERVICE])
    assert (report["predictions"], report["duplicates_dropped"]) == (2, 1)
    assert check_served(lake, [SERVICE], since=T0)["predictions"] == 1
    ids = pd.Series([uuid.uuid4().hex for _ in range(2000)])
    picked = in_sample(ids, 0.25)
    assert 400 < picked.sum() < 600 and (in_sample(ids, 0.25) == picked).all()  # the same ones every run
    assert in_sample(ids, 1.0).all()


def test_unknown_feature_services_and_features_are_reported_not_compared(lake):
    odd = {**_served("u1", "m1", T0, 40.0), "user_age_days": 12.0}
    _log(lake, [_prediction("u1", "m1", T0, service="other"), _prediction("u1", "m1", T0, features=odd)])
    report = check_served(lake, [SERVICE])
    assert report["unknown_feature_service"] == {"other": 1}
    assert report["unknown_features"] == ["user_age_days"]
    assert report["compared_predictions"] == 1 and report["totals"]["mismatches"] == 0


def test_comparing_at_predicted_at(lake):
    # Scored at T0 - 1h's values, logged an hour later (a replay): right at predicted_at only.
    p = _prediction("u1", "m1", T0 - 2 * H + M, predicted_at=T0 - H + M,
                    features=_served("u1", "m1", T0 - H + M, 40.0, req__minute_of_hour=1.0))
    _log(lake, [p])
    assert check_served(lake, [SERVICE])["totals"]["mismatches"] > 0
    report = check_served(lake, [SERVICE], at="predicted_at")
    assert report["totals"]["mismatches"] == 0 and report["at"] == "predicted_at"


def test_no_etl_run_or_no_predictions_is_one_clear_error(lake):
    with pytest.raises(DataError, match="no predictions in the lake"):
        check_served(lake, [SERVICE])
    _log(lake, [_prediction("u1", "m1", T0)])
    LakeLayout.of(lake).etl_state_path.unlink()
    with pytest.raises(DataError, match="etl run"):
        check_served(lake, [SERVICE])


def test_the_cli_prints_the_table_and_the_json_summary_and_fails_on_mismatches(lake, tmp_path):
    repo = tmp_path / f"served_repo_{uuid.uuid4().hex[:6]}"
    repo.mkdir()
    (repo / "specs.py").write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from tests.unit.test_served_consistency import SERVICE, spend, activity, user, merchant
        ENTITIES, VIEWS, SERVICES = (user, merchant), (spend, activity), (SERVICE,)
    """))
    config = tmp_path / "skewless.yaml"
    config.write_text(f"lake_path: {lake.lake_path}\nstate_dir: {lake.state_dir}\nfeature_repo_path: {repo}\n")
    stale = _served("u1", "m1", T0 - H, 40.0, req__minute_of_hour=10.0)
    _log(lake, [_prediction("u1", "m1", T0 + 10 * M, request_id="r-stale", features=stale),
                _prediction("u1", "m1", T0 + 10 * M)])
    r = subprocess.run([sys.executable, "-m", "cli", "check", "consistency", "--served", "--json", "--config",
                        str(config)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["totals"]["mismatches"] == 3 and summary["compared_predictions"] == 2
    assert "spend__count_1h" in r.stderr and "r-stale" in r.stderr
    saved = json.loads(Path(summary["saved"]).read_text())  # kept for skewless monitor report
    assert Path(summary["saved"]).parent == Path(lake.state_dir) / "monitoring" / "served"
    assert saved["totals"] == summary["totals"] and saved["checked_at"]
    bad = subprocess.run([sys.executable, "-m", "cli", "check", "consistency", "--served", "--sample", "2",
                          "--config", str(config)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert bad.returncode == 2 and "fraction in (0, 1]" in bad.stderr and "Traceback" not in bad.stderr
