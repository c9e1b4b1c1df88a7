from datetime import datetime, timezone

import numpy as np
import orjson
import pandas as pd
import pytest

from skewless.contracts import LABELS, TRANSACTIONS, InvalidEvent
from ingestion.simulator import bad_messages, simulate

START = datetime(2026, 1, 1, tzinfo=timezone.utc)
GOOD = {"transaction_id": "t1", "user_id": "u1", "merchant_id": "m1", "amount": 12.5, "currency": "EUR",
        "country": "DE", "channel": "web", "device_id": "d1", "event_time": "2026-01-01T10:00:00Z"}


@pytest.mark.parametrize("change,field", [
    ({"amount": "12.5"}, "amount"), ({"amount": -1}, "amount"), ({"amount": 1e12}, "amount"),
    ({"amount": True}, "amount"), ({"event_time": "yesterday"}, "event_time"),
    ({"event_time": "2026-01-01T10:00:00"}, "event_time"), ({"event_time": "1970-01-01T00:00:00Z"}, "event_time"),
    ({"currency": "euro"}, "currency"), ({"user_id": 7}, "user_id"), ({"user_id": None}, "user_id"),
    ({"schema_version": 99}, "schema_version"),
])
def test_invalid_transactions_name_the_field(change, field):
    with pytest.raises(InvalidEvent, match=field):
        TRANSACTIONS.validate({**GOOD, **change})


def test_v2_field_is_optional_and_versions_are_compatible():
    row = TRANSACTIONS.validate(GOOD)  # a v1 event
    assert "mcc" not in row and row["event_time"] == datetime(2026, 1, 1, 10, tzinfo=timezone.utc)
    assert TRANSACTIONS.validate({**GOOD, "schema_version": 2, "mcc": "5411"})["mcc"] == "5411"
    assert "mcc" not in TRANSACTIONS.arrow_schema(present=set(GOOD)).names
    assert "mcc" in TRANSACTIONS.arrow_schema(present={"mcc"}).names


def test_labels_contract():
    assert LABELS.validate({"transaction_id": "t", "is_fraud": False, "label_time": "2026-01-02T00:00:00+00:00"})["is_fraud"] is False
    with pytest.raises(InvalidEvent, match="is_fraud"):
        LABELS.validate({"transaction_id": "t", "is_fraud": "yes", "label_time": "2026-01-02T00:00:00Z"})


def test_every_bad_message_is_rejected_with_a_reason():
    for contract in (TRANSACTIONS, LABELS):
        for kind, raw in bad_messages(50, seed=3, contract_name=contract.name):
            with pytest.raises((InvalidEvent, orjson.JSONDecodeError)):
                contract.validate(orjson.loads(raw))


def test_simulator_is_deterministic_and_valid():
    a, b = simulate(3000, 9, START, 10), simulate(3000, 9, START, 10)
    assert a == b
    assert simulate(3000, 10, START, 10).transactions != a.transactions
    for tx in a.transactions:
        TRANSACTIONS.validate(tx)
    times = [tx["event_time"] for tx in a.transactions]
    assert times == sorted(times)


def test_simulated_fraud_is_rare_labelled_late_and_within_the_horizon():
    sim = simulate(20000, 1, START, 30)
    assert 0.01 <= sim.fraud_transactions / len(sim.transactions) <= 0.02
    tx_time = {t["transaction_id"]: t["event_time"] for t in sim.transactions}
    horizon = "2026-01-31"
    for lb in sim.labels:
        LABELS.validate(lb)
        delay = pd.Timestamp(lb["label_time"]) - pd.Timestamp(tx_time[lb["transaction_id"]])
        assert pd.Timedelta(days=1) <= delay <= pd.Timedelta(days=30)
        assert lb["label_time"] < horizon
    frauds = [lb for lb in sim.labels if lb["is_fraud"]]
    assert 0 < len(frauds) < sim.fraud_transactions  # not all fraud is ever labelled


def test_fraud_is_visible_to_windowed_features_but_not_to_single_fields():
    sim = simulate(40000, 2, START, 14)
    df = pd.DataFrame(sim.transactions)
    df["event_time"] = pd.to_datetime(df["event_time"])
    fraud_ids = {lb["transaction_id"] for lb in sim.labels if lb["is_fraud"]}
    df["fraud"] = df["transaction_id"].isin(fraud_ids)
    df = df.sort_values("event_time")
    # Transactions by the same user in the previous hour (strictly before), 0 when none.
    df["count_1h"] = (df.set_index("event_time").groupby("user_id")["amount"]
                      .transform(lambda s: s.rolling("1h", closed="left").count()).fillna(0).to_numpy())
    assert df.loc[df.fraud, "count_1h"].mean() > 3 * df.loc[~df.fraud, "count_1h"].mean()
    # A single field overlaps: legit traffic also has big amounts and foreign countries.
    legit_big = (df.loc[~df.fraud, "amount"] > df.loc[df.fraud, "amount"].median()).sum()
    assert legit_big > df.fraud.sum()
