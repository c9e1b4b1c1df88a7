"""The seeded traffic simulator: deterministic, valid, ~1.5% fraud in bursts, labels that come late."""

from __future__ import annotations

import functools
from datetime import datetime, timedelta, timezone

import numpy as np
import orjson
import pandas as pd
import pytest

from ingestion.simulator import (
    AMOUNT_SHIFT_FACTOR, COUNTRIES, COUNTRY_WEIGHTS, CURRENCY, DRIFT_KINDS, ENUMERATION_SHARE, FRAUD_PATTERN_SHARE,
    FRAUD_SHARE,
    NEW_COUNTRY_WEIGHTS,
    bad_messages, drift_start_at, simulate,
)
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


# -- drift (--drift KIND) -------------------------------------------------------------------------

DRIFT_AT = START + timedelta(days=7)


@functools.cache
def drifted(kind: str | None):
    return simulate(12_000, 21, START, 14, drift=kind, drift_start=DRIFT_AT if kind else None)


def halves(sim) -> tuple[pd.DataFrame, pd.DataFrame]:
    df = frame(sim)
    late = df["event_time"] >= pd.Timestamp(DRIFT_AT)
    return df[~late], df[late]


@pytest.mark.parametrize("kind", DRIFT_KINDS)
def test_drift_leaves_the_traffic_before_it_as_it_was_and_is_deterministic(kind):
    sim, undrifted = drifted(kind), drifted(None)
    before = [t for t in sim.transactions if TRANSACTIONS.validate(t)["event_time"] < DRIFT_AT]
    assert before and before == [t for t in undrifted.transactions if t["event_time"] < "2026-01-08"]
    assert len(sim.transactions) == len(undrifted.transactions)  # --events is still the count
    assert sim.drift == kind and sim.drift_start == DRIFT_AT
    assert sim.drifted_transactions == len(sim.transactions) - len(before)
    again = simulate(12_000, 21, START, 14, drift=kind, drift_start=DRIFT_AT)
    assert orjson.dumps(again.transactions) == orjson.dumps(sim.transactions) and again.labels == sim.labels
    # Every drifted event is still a valid one, in time order, with labels that tell the truth.
    times = [TRANSACTIONS.validate(t)["event_time"] for t in sim.transactions]
    assert times == sorted(times)
    assert len({t["transaction_id"] for t in sim.transactions}) == len(sim.transactions)
    for lb in sim.labels:
        LABELS.validate(lb)


def test_amount_shift_scales_every_amount_after_the_start():
    _, after_base = halves(drifted(None))
    _, after = halves(drifted("amount-shift"))
    ratio = after["amount"].to_numpy() / after_base["amount"].to_numpy()
    assert np.allclose(ratio, AMOUNT_SHIFT_FACTOR, rtol=0.01)


def test_fraud_pattern_is_card_testing_bursts_that_get_labelled():
    sim, undrifted = drifted("fraud-pattern"), drifted(None)
    df = frame(sim)
    testing = df[df["device_id"].str.startswith("ctd")]  # the new pattern's cards
    assert (testing["event_time"] >= pd.Timestamp(DRIFT_AT)).all()
    _, after_base = halves(undrifted)
    assert len(testing) == round((~after_base["fraud"]).sum() * FRAUD_PATTERN_SHARE)  # in legit traffic's place
    assert sim.fraud_transactions == undrifted.fraud_transactions + len(testing)
    assert testing["amount"].between(0.5, 5.0).all() and (testing["channel"] == "web").all()
    bursts = testing.groupby("device_id").agg(n=("amount", "size"), users=("user_id", "nunique"),
                                              merchants=("merchant_id", "nunique"),
                                              span=("event_time", lambda s: s.max() - s.min()))
    assert (bursts["users"] == 1).all() and (bursts["merchants"] == 1).all()
    assert bursts["n"].median() >= 8 and (bursts["span"] <= pd.Timedelta(minutes=15)).all()
    # Chargebacks come as for any fraud (those due before the horizon), and say fraud.
    labels = {lb["transaction_id"]: lb["is_fraud"] for lb in sim.labels}
    testing_labels = [labels[t] for t in testing["transaction_id"] if t in labels]
    assert len(testing_labels) >= 10 and all(testing_labels)


def test_card_enumeration_is_waves_of_cards_each_used_once_for_a_small_amount():
    sim, undrifted = drifted("card-enumeration"), drifted(None)
    df = frame(sim)
    tested = df[df["device_id"].str.startswith("ced")]  # the new pattern's payments
    assert (tested["event_time"] >= pd.Timestamp(DRIFT_AT)).all()
    _, after_base = halves(undrifted)
    assert len(tested) == round((~after_base["fraud"]).sum() * ENUMERATION_SHARE)  # in legit traffic's place
    assert sim.fraud_transactions == undrifted.fraud_transactions + len(tested)
    assert tested["amount"].between(2.0, 20.0).all() and (tested["channel"] == "web").all()
    waves = tested.assign(wave=tested["device_id"].str.rsplit("-", n=1).str[0]).groupby("wave").agg(
        n=("amount", "size"), cards=("user_id", "nunique"), merchants=("merchant_id", "nunique"),
        span=("event_time", lambda s: s.max() - s.min()))
    # A wave: many cards, one payment each, at one merchant, within half an hour.
    assert (waves["merchants"] == 1).all() and (waves["span"] <= pd.Timedelta(minutes=20)).all()
    assert waves["n"].median() >= 20 and (waves["cards"] >= waves["n"] - 2).all()
    assert tested["merchant_id"].nunique() <= 3
    labels = {lb["transaction_id"]: lb["is_fraud"] for lb in sim.labels}
    got = [labels[t] for t in tested["transaction_id"] if t in labels]
    assert len(got) >= 10 and all(got)


def test_country_mix_moves_the_country_shares_and_the_currency_follows():
    _, after_base = halves(drifted(None))
    _, after = halves(drifted("country-mix"))
    assert (after["currency"] == after["country"].map(CURRENCY)).all()
    grew = [c for c, old, new in zip(COUNTRIES, COUNTRY_WEIGHTS, NEW_COUNTRY_WEIGHTS)
            if new / NEW_COUNTRY_WEIGHTS.sum() > 2 * old / COUNTRY_WEIGHTS.sum()]
    assert grew
    share_base = after_base["country"].isin(grew).mean()
    share = after["country"].isin(grew).mean()
    assert share > share_base + 0.15, (share_base, share)


def test_broken_field_nulls_mcc_and_the_events_stay_valid():
    sim = drifted("broken-field")
    before, after = halves(sim)
    assert before["mcc"].notna().all() and after["mcc"].isna().all()
    raw = [t for t in sim.transactions if t["mcc"] is None]
    assert len(raw) == len(after)
    for t in raw:  # sent as "mcc": null, which the contract accepts (mcc is optional)
        assert "mcc" not in TRANSACTIONS.validate(orjson.loads(orjson.dumps(t)))


def test_drift_starts_at_a_time_or_a_fraction_inside_the_period():
    assert drift_start_at(START, 10) == START
    assert drift_start_at(START, 10, fraction=0.75) == START + timedelta(days=7.5)
    assert drift_start_at(START, 10, START + timedelta(days=3)) == START + timedelta(days=3)
    for bad in ({"drift_from": START + timedelta(days=10)}, {"drift_from": START - timedelta(seconds=1)},
                {"fraction": 1.0}, {"fraction": -0.1},
                {"drift_from": START + timedelta(days=1), "fraction": 0.5},
                {"drift_from": datetime(2026, 1, 2)}):
        with pytest.raises(ValueError):
            drift_start_at(START, 10, **bad)
    with pytest.raises(ValueError, match="unknown drift kind"):
        simulate(100, 1, START, 1, drift="mean-shift")
    with pytest.raises(ValueError, match="schema version 2"):
        simulate(100, 1, START, 1, schema_version=1, drift="broken-field")
