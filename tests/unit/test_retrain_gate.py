"""``skewless retrain``'s windows and its ``--if-drift`` gate (``training.retrain``), on a
private state dir (MLflow's SQLite store, no champion registered)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from skewless import drift_status
from skewless.drift_status import DriftStatus, FeatureFigures
from skewless.lake_layout import LakeLayout
from skewless.settings import Settings
from training.retrain import drift_gate, windows


def _settings(tmp_path, **retrain) -> Settings:
    return Settings(state_dir=str(tmp_path / "state"), lake_path=str(tmp_path / "lake"),
                    training={"label_maturity_days": 10}, retrain={"holdout_days": 3, **retrain})


def test_the_holdout_is_the_newest_mature_days_and_the_challenger_learns_before_it(tmp_path):
    cutoff = datetime(2026, 6, 30, tzinfo=timezone.utc)
    w = windows(_settings(tmp_path), cutoff)
    assert w["holdout_end"] == cutoff - timedelta(days=10) and w["holdout_start"] == cutoff - timedelta(days=13)
    assert w["train_start"] is None  # every transaction before the holdout
    w = windows(_settings(tmp_path, window_days=14), cutoff)
    assert w["train_start"] == cutoff - timedelta(days=27)


def _status(drifted: bool) -> DriftStatus:
    figures = {"amount": FeatureFigures("wasserstein_norm", 0.8 if drifted else 0.01, 0.0, drifted),
               "score": FeatureFigures("wasserstein_norm", 0.02, 0.0, False)}
    return DriftStatus(checked_at=1_700_000_100.0, window_start=1_700_000_000.0 - 86_400, window_end=1_700_000_000.0,
                       drifted=drifted, predictions=5_000, model_version="v1", reference_run="r1", features=figures)


def test_if_drift_retrains_only_when_the_latest_check_flagged_drift(tmp_path):
    settings = _settings(tmp_path)
    go, why = drift_gate(settings)
    assert not go and "no drift check saved yet" in why
    path = LakeLayout.of(settings).drift_latest_path
    drift_status.write(path, _status(drifted=False))
    go, why = drift_gate(settings)
    assert not go and "found no drift" in why and "5,000 predictions" in why
    drift_status.write(path, _status(drifted=True))
    go, why = drift_gate(settings)
    assert go and "flagged drift in amount" in why and "score" not in why
