"""Realised performance on labelled predictions: only mature predictions count, labels are
the ones known at the time of the check, and the cost is the decisions actually taken."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from monitoring.realised import realised_performance
from skewless.settings import load_settings
from tests.integration.lake_fixtures import land

NOW = datetime(2026, 11, 1, tzinfo=timezone.utc)


def _prediction(tid: str, at: datetime, score: float, review: bool, amount: float, version: str = "3") -> dict:
    return {"request_id": uuid.uuid4().hex, "transaction_id": tid, "user_id": "u", "merchant_id": "m",
            "amount": amount, "event_time": at.isoformat(), "predicted_at": at.isoformat(), "model_name": "fraud",
            "model_version": version, "feature_service": "svc", "score": score, "review": review, "features": {}}


@pytest.fixture
def settings(tmp_path):
    s = load_settings(None).model_copy(update={"lake_path": str(tmp_path / "lake"), "state_dir": tmp_path / "state"})
    old = NOW - timedelta(days=20)
    preds = [
        _prediction("caught", old, 0.9, True, 100.0),       # fraud, flagged
        _prediction("missed", old, 0.2, False, 250.0),      # fraud, not flagged
        _prediction("alarm", old, 0.8, True, 30.0),         # legitimate, flagged
        _prediction("fine", old, 0.1, False, 40.0),         # legitimate, no label at all
        _prediction("late", old, 0.3, False, 70.0),         # its chargeback comes after NOW: not known yet
        _prediction("fresh", NOW - timedelta(days=2), 0.95, True, 500.0, version="4"),  # too young to judge
    ]
    preds.append(dict(preds[0], request_id=preds[0]["request_id"]))  # a copy landed twice counts once
    land(s, "predictions", preds, tag="p")
    labels = [{"transaction_id": t, "is_fraud": True, "label_time": (old + timedelta(days=d)).isoformat()}
              for t, d in (("caught", 3), ("missed", 9), ("fresh", 1))]
    labels.append({"transaction_id": "late", "is_fraud": True, "label_time": (NOW + timedelta(days=1)).isoformat()})
    land(s, "labels", labels, tag="l")
    return s


def test_mature_predictions_against_the_labels_known_then(settings):
    r = realised_performance(settings, now=NOW)
    review_cost = settings.training.review_cost
    assert (r["predictions"], r["too_young"], r["duplicate_copies_dropped"]) == (6, 1, 1)
    o = r["overall"]
    assert (o["predictions"], o["frauds"]) == (5, 2)  # "late" is legitimate as far as NOW knows
    assert o["cost"] == pytest.approx(250.0 + 2 * review_cost)  # the missed fraud + two reviews
    assert o["cost_without_model"] == pytest.approx(100.0 + 250.0)
    assert o["recall"] == pytest.approx(0.5) and o["review_rate"] == pytest.approx(2 / 5)
    # scores rank caught (0.9) > alarm (0.8) > late (0.3) > missed (0.2) > fine (0.1): AP = (1 + 2/4) / 2
    assert o["pr_auc"] == pytest.approx(0.75)
    assert list(r["by_model_version"]) == ["3"]  # version 4's only prediction is too young
    # a month on, the late chargeback is known and the fresh prediction mature
    later = realised_performance(settings, now=NOW + timedelta(days=30))
    assert later["overall"]["frauds"] == 4 and later["too_young"] == 0
    assert later["by_model_version"]["4"]["pr_auc"] is None  # one class only: no PR-AUC, not 0


def test_the_command_prints_a_table_and_ends_with_json(settings, tmp_path):
    import yaml
    from typer.testing import CliRunner

    from cli import app

    cfg = tmp_path / "skewless.yaml"
    cfg.write_text(yaml.safe_dump({"lake_path": settings.lake_path, "state_dir": str(settings.state_dir)}))
    out = CliRunner().invoke(app, ["monitor", "performance", "--config", str(cfg), "--json"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.output.strip().splitlines()[-1])
    assert summary["predictions"] == 6 and "overall" in summary
