"""The seeded traffic simulator: deterministic, valid, ~1.5% fraud in bursts, labels that come late."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson
import pandas as pd
import pytest

from ingestion.simulator import FRAUD_SHARE, bad_messages, simulate
from skewless.contracts import LABELS, TRANSACTIONS, InvalidEvent

START = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def month():
    """30 days of traffic: long enough for most chargebacks to arrive."""
    return simulate(30_000, 5, START, 30)


def frame(sim) -> pd.DataFrame:
    df = pd.DataFrame(sim.transactions)
    df["event_time"] = pd.to_datetime(df["event_time"], utc=True)
    # Fraud is on a compromised card's new device ("fd..."); legit devices are "d..." or "nd...".
    df["fraud"] = df["device_id"].str.startswith("fd")
    return df


def test_same_seed_same_events_byte_for_byte():
    a, b = simulate(3000, 9, START, 7), simulate(3000, 9, START, 7)
    assert orjson.dumps(a.transactions) == orjson.dumps(b.transactions)
    assert orjson.dumps(a.labels) == orjson.dumps(b.labels)
    assert a.fraud_transactions == b.fraud_transactions
    other = simulate(3000, 10, START, 7)
    assert [t["amount"] for t in other.transactions] != [t["amount"] for t in a.transactions]
    later = simulate(3000, 9, START + timedelta(days=1), 7)
    assert later.transactions[0]["event_time"] != a.transactions[0]["event_time"]


def test_events_are_valid_sorted_and_inside_the_horizon(month):
    horizon = START + timedelta(days=30)
    times = [TRANSACTIONS.validate(t)["event_time"] for t in month.transactions]
    assert times == sorted(times) and START <= times[0] and times[-1] < horizon
    assert len({t["transaction_id"] for t in month.transactions}) == len(month.transactions) == 30_000
    assert all(t["schema_version"] == 2 and t["mcc"] for t in month.transactions)
    label_times = [LABELS.validate(lb)["label_time"] for lb in month.labels]
    assert label_times == sorted(label_times)


def test_schema_version_1_has_no_v2_field():
    v1 = simulate(500, 3, START, 2, schema_version=1)
    assert all(t["schema_version"] == 1 and "mcc" not in t for t in v1.transactions)
    for t in v1.transactions:
        assert "mcc" not in TRANSACTIONS.validate(t)


def test_fraud_share_is_about_one_and_a_half_percent(month):
    df = frame(month)
    assert df["fraud"].sum() == month.fraud_transactions
    assert month.fraud_transactions == round(30_000 * FRAUD_SHARE)
    assert 0.012 <= df["fraud"].mean() <= 0.018
    # Bursts: the same card, several transactions, within an hour.
    bursts = df[df.fraud].groupby("device_id").agg(n=("transaction_id", "size"), user=("user_id", "nunique"),
                                                     span=("event_time", lambda s: s.max() - s.min()))
    assert (bursts["user"] == 1).all() and bursts["n"].between(1, 8).all() and bursts["n"].median() >= 3
    assert (bursts["span"] <= pd.Timedelta(hours=1)).all()


def test_labels_come_after_their_transaction_and_within_the_horizon(month):
    df = frame(month).set_index("transaction_id")
    horizon = pd.Timestamp(START + timedelta(days=30))
    assert month.labels
    for lb in month.labels:
        tx_time = df.at[lb["transaction_id"], "event_time"]
        label_time = pd.Timestamp(lb["label_time"])
        assert tx_time + pd.Timedelta(days=1) <= label_time <= tx_time + pd.Timedelta(days=30)
        assert label_time < horizon
        assert lb["is_fraud"] == bool(df.at[lb["transaction_id"], "fraud"])  # labels tell the truth
    fraud_labels = [lb for lb in month.labels if lb["is_fraud"]]
    # Not every fraud is ever labelled (~80%, fewer near the horizon), but most of it is.
    assert 0.5 * month.fraud_transactions < len(fraud_labels) < month.fraud_transactions
    assert len({lb["transaction_id"] for lb in month.labels}) == len(month.labels)


def test_a_short_horizon_has_no_labels_yet():
    assert simulate(2000, 4, START, 1).labels == []  # chargebacks take at least a day


def test_fraud_bursts_show_in_a_windowed_count(month):
    df = frame(month).sort_values("event_time", kind="stable")
    # Transactions by the same user in the hour before (strictly before), as the features count them.
    df["count_1h"] = (df.set_index("event_time").groupby("user_id")["amount"]
                      .transform(lambda s: s.rolling("1h", closed="left").count()).fillna(0).to_numpy())
    fraud_mean = df.loc[df.fraud, "count_1h"].mean()
    legit_mean = df.loc[~df.fraud, "count_1h"].mean()
    assert fraud_mean > 1.0 and fraud_mean > 5 * legit_mean, (fraud_mean, legit_mean)
    # ... while a single field overlaps: hundreds of legit transactions are bigger than the median fraud.
    assert (df.loc[~df.fraud, "amount"] > df.loc[df.fraud, "amount"].median()).sum() > df.fraud.sum() / 2


@pytest.mark.parametrize("contract", [TRANSACTIONS, LABELS], ids=lambda c: c.name)
def test_bad_messages_are_all_rejected_and_deterministic(contract):
    msgs = list(bad_messages(200, 8, contract.name))
    assert msgs == list(bad_messages(200, 8, contract.name))
    assert {k for k, _ in msgs} == {"not_json", "missing_field", "wrong_type", "absurd_value", "not_an_object"}
    for kind, raw in msgs:
        with pytest.raises((InvalidEvent, orjson.JSONDecodeError)):
            contract.validate(orjson.loads(raw))
