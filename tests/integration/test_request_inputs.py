"""Request-time inputs are declared once and derived by one function: training (labelled
transactions read back from the lake), serving (one transaction of /v1/predict) and
monitoring (the consistency check's events) give identical inputs for the same events,
each reading the declaration back from a real Feast registry."""

from __future__ import annotations

from datetime import datetime, timezone
from fractions import Fraction

import pandas as pd
import pytest

from feature_repo.specs import request_features
from monitoring.consistency import request_rows
from serving.online_reader import FeaturePlan
from serving.routes.predict import request_row
from serving.schemas import Transaction
from skewless.errors import DataError
from skewless.features.definitions import load as load_definitions
from skewless.features.dsl import RequestInput
from skewless.features.feast_objects import service_request_inputs
from skewless.features.request_inputs import derive
from skewless.features.store import apply, feature_store
from skewless.settings import load_settings
from tests.conftest import REPO
from tests.integration.lake_fixtures import land
from tests.isolation import isolated_settings
from training.labels import label_frame

SERVICE = "fraud_model_v1"
# Times that a naive conversion gets wrong: offsets far from UTC (the same instant written
# three ways), microseconds at both ends of a second, the contract's first and last
# instants, a leap day, and amounts at the contract's edges.
TIMES_AND_AMOUNTS = [
    ("2026-03-01T12:00:00.123456+05:30", 12.34),
    ("2026-03-01T06:30:00.123456Z", 0.01),
    ("2026-02-28T22:30:00.123456-08:00", 1_000_000.0),
    ("2026-03-01T00:00:00.000001+14:00", 99.99),
    ("2026-03-01T23:59:59.999999-12:00", 0.1),
    ("2024-02-29T23:59:59.5+00:00", 3.0),
    ("2000-01-01T00:00:00Z", 7.0),
    ("2099-12-31T23:59:59.999999Z", 12.5),
    ("2026-03-01T09:15:42.100000+09:00", 1e-2 * 3),
]


def _events() -> list[dict]:
    return [{"transaction_id": f"t{i}", "user_id": f"u{i % 3}", "merchant_id": f"m{i % 2}", "amount": amount,
             "currency": "EUR", "country": "FR", "channel": "web", "device_id": "d1", "event_time": when}
            for i, (when, amount) in enumerate(TIMES_AND_AMOUNTS)]


def _exact_epoch(iso: str) -> float:
    """Unix seconds of an ISO time, correctly rounded from its exact microseconds."""
    t = datetime.fromisoformat(iso)
    micros = (t - datetime(1970, 1, 1, tzinfo=timezone.utc)) // pd.Timedelta(1, "us").to_pytimedelta()
    return float(Fraction(micros, 10**6))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A real Feast registry with the repository's definitions, and a lake of the events."""
    tmp = tmp_path_factory.mktemp("request-inputs")
    settings = isolated_settings(load_settings(REPO / "skewless.yaml"), tmp, online_store="sqlite",
                                 training={"label_maturity_days": 0})
    store = feature_store(settings)
    apply(settings, load_definitions(settings), store)
    land(settings, "transactions", _events())
    return settings, store


def test_the_declaration_is_read_back_from_feasts_registry(world):
    settings, store = world
    inputs = service_request_inputs(store, SERVICE)
    assert inputs == request_features.request_inputs
    assert {i.name: (i.column, i.derive, i.as_feature) for i in inputs} == {
        "amount": ("amount", "value", True), "event_epoch": ("event_time", "epoch_seconds", False)}
    assert FeaturePlan.for_service(store, SERVICE).request_inputs == inputs


def test_training_serving_and_monitoring_derive_identical_request_inputs(world):
    settings, store = world
    inputs = service_request_inputs(store, SERVICE)
    events = _events()
    # Training: the labelled transactions, read back from the lake.
    trained = label_frame(settings, None, None, datetime(2100, 1, 1, tzinfo=timezone.utc), inputs)
    trained = trained.set_index("transaction_id").loc[[e["transaction_id"] for e in events]]
    # Serving: each transaction as /v1/predict parses it, with the champion's plan.
    plan = FeaturePlan.for_service(store, SERVICE)
    served = [request_row(Transaction.model_validate(e), plan) for e in events]
    # Monitoring: an event per entity at the comparison time.
    monitored = [request_rows(pd.DataFrame({"user_id": [e["user_id"]]}), inputs,
                              datetime.fromisoformat(e["event_time"]), {"amount": e["amount"]}).iloc[0]
                 for e in events]
    for e, t, s, m in zip(events, trained.itertuples(), served, monitored):
        expected = {"amount": float(e["amount"]), "event_epoch": _exact_epoch(e["event_time"])}
        for name, value in expected.items():
            got = (getattr(t, name), s[name], float(m[name]))
            assert all(type(g) is float or hasattr(g, "dtype") for g in got)
            assert [float(g) for g in got] == [value] * 3, (e["event_time"], name, got)
    # The same instant written with three offsets is one epoch everywhere.
    assert len({s["event_epoch"] for s in served[:3]}) == 1


def test_frame_and_one_event_agree_to_the_microsecond_and_floor_finer_times():
    inputs = (RequestInput("epoch", "t", derive="epoch_seconds"), RequestInput("x", "x"))
    times = [pd.Timestamp("2026-03-01T12:00:00.1234569+05:30"), pd.Timestamp("1969-12-31T23:59:59.9999995Z"),
             pd.Timestamp("2099-12-31T23:59:59.999999999Z"), pd.Timestamp("2026-01-01T00:00:00.0000010-03:00")]
    frame = derive(inputs, pd.DataFrame({"t": times, "x": [1, 2.5, 3, 4]}))
    for i, t in enumerate(times):
        one = derive(inputs, {"t": t, "x": frame["x"].iloc[i]})
        assert one == {"epoch": frame["epoch"].iloc[i], "x": frame["x"].iloc[i]}
    assert frame["epoch"].iloc[0] == datetime(2026, 3, 1, 6, 30, 0, 123456, tzinfo=timezone.utc).timestamp()
    assert frame["epoch"].iloc[1] == -1e-6  # floored, not rounded toward zero


def test_a_time_without_a_timezone_or_a_missing_column_is_refused():
    inputs = (RequestInput("epoch", "t", derive="epoch_seconds"),)
    naive = datetime(2026, 3, 1, 12)
    with pytest.raises(DataError, match="timezone"):
        derive(inputs, {"t": naive})
    with pytest.raises(DataError, match="timezone"):
        derive(inputs, pd.DataFrame({"t": [naive]}))
    with pytest.raises(DataError, match="lacks"):
        derive(inputs, {"other": 1})
    with pytest.raises(ValueError, match="unknown derivation"):
        RequestInput("epoch", "t", derive="hours")  # type: ignore[arg-type]
