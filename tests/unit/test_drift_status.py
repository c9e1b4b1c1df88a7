"""The latest drift check's figures: the file ``skewless monitor drift`` leaves
(``skewless.drift_status``) and serving's gauges of it (``serving.drift_figures``)."""

from __future__ import annotations

import math

import pytest
from prometheus_client import REGISTRY

from serving.drift_figures import DriftFigures
from skewless import drift_status
from skewless.drift_status import DriftStatus, FeatureFigures
from skewless.errors import DataError


def _status(window_end: float, checked_at: float = 0.0, **features: FeatureFigures) -> DriftStatus:
    return DriftStatus(checked_at=checked_at or window_end + 5, window_start=window_end - 3600, window_end=window_end,
                       drifted=any(f.drifted for f in features.values()), predictions=1234, model_version="3",
                       reference_run="r1", features=dict(features))


AMOUNT = FeatureFigures("wasserstein_norm", 0.81, 0.0, True)
COUNTRY = FeatureFigures("js_distance", 0.02, 0.0, False)
MCC = FeatureFigures("js_distance", None, 1.0, True)  # no values left: only the missing rate tells


def test_the_status_round_trips_and_the_newest_traffic_wins(tmp_path):
    path = tmp_path / "monitoring" / "drift_latest.json"
    assert drift_status.read(path) is None  # no check yet
    first = _status(1_000_000.0, amount=AMOUNT, mcc=MCC)
    assert drift_status.write(path, first) and drift_status.read(path) == first
    older = _status(999_000.0, checked_at=2_000_000.0, amount=COUNTRY)  # last week's traffic, checked later
    assert not drift_status.write(path, older) and drift_status.read(path) == first
    rerun = _status(1_000_000.0, checked_at=1_500_000.0, amount=COUNTRY)  # the same window again: the later check
    assert drift_status.write(path, rerun) and drift_status.read(path) == rerun
    assert [p.name for p in path.parent.iterdir()] == ["drift_latest.json"]  # no temp file left


@pytest.mark.parametrize("text", ["{not json", "[]", '{"format": 99}', '{"format": 1, "checked_at": 1}',
                                  '{"format": 1, "checked_at": 1, "window_start": 0, "window_end": 1, "drifted": "no",'
                                  ' "predictions": 1, "features": {}}'])
def test_a_file_that_is_not_a_status_is_a_data_error_and_the_next_check_replaces_it(tmp_path, text):
    path = tmp_path / "drift_latest.json"
    path.write_text(text)
    with pytest.raises(DataError, match="drift_latest.json"):
        drift_status.read(path)
    good = _status(5.0, amount=AMOUNT)
    assert drift_status.write(path, good) and drift_status.read(path) == good


def _gauges() -> dict:
    return {(s.name, s.labels.get("feature")): s.value for m in REGISTRY.collect() for s in m.samples
            if s.name.startswith("skewless_drift_")}


def test_the_gauges_follow_the_file(tmp_path):
    path = tmp_path / "drift_latest.json"
    figures = DriftFigures(path)
    assert figures.check() is None
    none = _gauges()
    assert math.isnan(none[("skewless_drift_detected", None)]) and none[("skewless_drift_status_readable", None)] == 1
    assert not any(feature for _, feature in none)

    drift_status.write(path, _status(1_000_000.0, amount=AMOUNT, country=COUNTRY, mcc=MCC))
    assert figures.check() is None
    got = _gauges()
    assert got[("skewless_drift_score", "amount")] == 0.81 and got[("skewless_drift_flagged", "amount")] == 1
    assert got[("skewless_drift_score", "country")] == 0.02 and got[("skewless_drift_flagged", "country")] == 0
    assert math.isnan(got[("skewless_drift_score", "mcc")]) and got[("skewless_drift_missing_rate_change", "mcc")] == 1
    assert got[("skewless_drift_detected", None)] == 1 and got[("skewless_drift_predictions", None)] == 1234
    assert got[("skewless_drift_checked_timestamp_seconds", None)] == 1_000_005.0
    assert got[("skewless_drift_window_end_timestamp_seconds", None)] == 1_000_000.0

    # A new champion's check without mcc and country: their series are unknown, not the old figures.
    drift_status.write(path, _status(1_100_000.0, amount=COUNTRY))
    figures.check()
    got = _gauges()
    assert got[("skewless_drift_flagged", "amount")] == 0 and got[("skewless_drift_detected", None)] == 0
    for name in ("mcc", "country"):
        assert all(math.isnan(got[(g, name)]) for g in ("skewless_drift_score", "skewless_drift_flagged",
                                                         "skewless_drift_missing_rate_change"))

    path.write_text("{half a fi")
    assert "unreadable" in figures.check()
    assert _gauges() == {**got, ("skewless_drift_status_readable", None): 0.0}  # the last figures stand

    path.unlink()  # the state dir wiped: no check any more
    figures.check()
    gone = _gauges()
    assert gone[("skewless_drift_status_readable", None)] == 1 and math.isnan(gone[("skewless_drift_detected", None)])
