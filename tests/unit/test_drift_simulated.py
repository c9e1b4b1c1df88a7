"""Drift is flagged when the simulator drifts (``skewless ingest produce --drift KIND``),
on the feature the drift moves, and not when it does not.

Traffic goes through the drift library as ``skewless monitor drift`` uses it (reference
histograms, live binned on them, ``monitoring.drift.detect``), without Kafka, Spark or
Feast: per transaction, what the prediction log carries for it — the model's request
field ``amount`` and two of its windowed features computed the way the feature
definitions declare them (``user_spend__count_1h``: the card's transactions in the hour
before; ``user_diversity__distinct_countries_24h``: distinct countries in the day before)
— and the raw fields the model does not see (``country``, ``channel``, ``mcc``). Each
row's cluster is its card within its day (``monitoring.cluster_key`` / ``cluster_block``:
a card's fraud burst is several dependent rows), as the prediction log and the training set
give it.

One simulated world per seed (the population of users and merchants comes from the seed:
another seed is another world, whose differences are real and flagged). Reference: days
1-7 of a 14-day run (day 0 is the windows' warm-up: no history yet); live: days 7-14 of
the same run, drifted from day 7 or not. Before day 7 a drifted run is byte for byte the
undrifted one, so each drifted check has an exact control: the same seed and days,
without the drift.
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from ingestion.simulator import DRIFT_KINDS, simulate
from monitoring.drift import DriftReport, detect_samples
from skewless.design_effect import cluster_ids
from skewless.settings import MonitoringSettings

START = datetime(2026, 1, 1, tzinfo=timezone.utc)
DAYS = 14
EVENTS = 20_000
WARM_UP = START + timedelta(days=1)
DRIFT_AT = START + timedelta(days=7)
SEEDS = (1, 2)

# What each kind moves: the features flagged, and by which signal.
EXPECTED = {
    "amount-shift": {"amount": "distribution"},
    "fraud-pattern": {"user_spend__count_1h": "distribution"},
    "country-mix": {"country": "distribution", "user_diversity__distinct_countries_24h": "distribution"},
    "broken-field": {"mcc": "missing"},
}
# card-enumeration moves none of the profile's card features (``test_card_enumeration_...``):
# each stolen card is used once; it is seen at the merchants (their count in the hour, mcc).
LOUD = tuple(k for k in DRIFT_KINDS if k in EXPECTED)


def profile(transactions: list[dict]) -> pd.DataFrame:
    """Per transaction: its time, its card, the model's amount and two windowed features, raw fields."""
    df = pd.DataFrame(transactions)
    df["event_time"] = pd.to_datetime(df["event_time"], utc=True)
    df = df.sort_values(["user_id", "event_time"], kind="stable").reset_index(drop=True)
    times = df["event_time"].dt.tz_localize(None).to_numpy()
    countries = pd.factorize(df["country"])[0]
    count_1h = np.zeros(len(df))
    countries_24h = np.zeros(len(df))
    for idx in df.groupby("user_id", sort=False).indices.values():
        t, c = times[idx], countries[idx]
        now = np.searchsorted(t, t, "left")  # events strictly before each one
        hour = np.searchsorted(t, t - np.timedelta64(1, "h"), "left")
        day = np.searchsorted(t, t - np.timedelta64(24, "h"), "left")
        count_1h[idx] = now - hour
        countries_24h[idx] = [len(set(c[a:b].tolist())) for a, b in zip(day, now)]
    return pd.DataFrame({
        "event_time": df["event_time"], "user_id": df["user_id"], "amount": df["amount"], "user_spend__count_1h": count_1h,
        "user_diversity__distinct_countries_24h": countries_24h,
        "country": df["country"].astype(object), "channel": df["channel"].astype(object),
        "mcc": df["mcc"].astype(object),
    })


@functools.cache
def halves(seed: int, drift: str | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(reference: days 1-7, live: days 7-14) of one run."""
    sim = simulate(EVENTS, seed, START, DAYS, drift=drift, drift_start=DRIFT_AT if drift else None)
    p = profile(sim.transactions)
    live = p["event_time"] >= pd.Timestamp(DRIFT_AT)
    reference = ~live & (p["event_time"] >= pd.Timestamp(WARM_UP))
    return p[reference], p[live]


def check(seed: int, drift: str | None) -> DriftReport:
    settings = MonitoringSettings()
    reference, _ = halves(seed, None)  # the drift starts at day 7: the reference is the undrifted run's
    _, live = halves(seed, drift)
    clusters = [cluster_ids(h[settings.cluster_key], h["event_time"], settings.cluster_block) for h in (reference, live)]
    return detect_samples(*(h.drop(columns=["event_time", "user_id"]) for h in (reference, live)), settings, *clusters)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", LOUD)
def test_drift_is_flagged_on_the_features_it_moves(kind, seed):
    same = [h.sort_values(list(h.columns), kind="stable").reset_index(drop=True)
            for h in (halves(seed, kind)[0], halves(seed, None)[0])]
    assert same[0].equals(same[1])  # the reference is the same with or without the later drift
    report = check(seed, kind)
    assert report.drifted
    flagged = {f.name: [s.signal for s in f.signals if s.drifted] for f in report.features if f.drifted}
    assert flagged == {name: [signal] for name, signal in EXPECTED[kind].items()}, report.to_dict()


@pytest.mark.parametrize("seed", SEEDS)
def test_the_same_traffic_without_drift_is_not_flagged(seed):
    report = check(seed, None)
    assert not report.drifted, report.drifted_features
    assert report.tests == 12  # every feature's two signals were measured


def test_broken_field_is_seen_as_a_column_turning_null():
    mcc = check(SEEDS[0], "broken-field").feature("mcc")
    assert mcc.missing_rate_reference == 0.0 and mcc.missing_rate_live == 1.0
    assert mcc.signals[0].note == "no values in the live sample"


def test_without_drift_false_alarms_stay_within_alpha():
    """Fraud comes in bursts (3-8 big amounts on one card), so between two halves of one stable
    run the amount's tail moves more than independent rows allow: rows treated as exchangeable,
    4 of seeds 1-20 flagged amount (W1 0.12-0.15 sigma; 0.02-0.07 with the fraud rows left out),
    a 20% false-alarm rate at alpha 0.05. With each card's day as a cluster, the amount's
    distribution signal measures a design effect near 3 and no seed is flagged."""
    reports = {seed: check(seed, None) for seed in range(1, 21)}
    alarms = [seed for seed, report in reports.items() if report.drifted]
    assert len(alarms) <= 1, alarms  # 5% of 20
    # The dependence is seen where it is: the bursty amount's spread, not every signal.
    amount = [r.feature("amount").signals[0].inflation for r in reports.values()]
    assert min(amount) > 1.5, amount


def merchant_count_1h(sim) -> pd.DataFrame:
    """Per transaction, its merchant's transactions in the hour before it (``merchant_activity__count_1h``
    as the definitions declare it, at a 1 s hop), with its time and card."""
    tx = pd.DataFrame(sim.transactions)[["transaction_id", "merchant_id", "event_time", "user_id"]]
    tx["event_time"] = pd.to_datetime(tx["event_time"], utc=True)
    times = tx["event_time"].dt.tz_localize(None).to_numpy()
    out = np.zeros(len(tx))
    for idx in tx.groupby("merchant_id").indices.values():
        t = np.sort(times[idx])
        mine = times[idx]
        out[idx] = np.searchsorted(t, mine, "left") - np.searchsorted(t, mine - np.timedelta64(1, "h"), "left")
    return tx.assign(merchant_activity__count_1h=out)


@functools.cache
def merchant_halves(seed: int, drift: str | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    sim = simulate(EVENTS, seed, START, DAYS, drift=drift, drift_start=DRIFT_AT if drift else None)
    f = merchant_count_1h(sim)
    live = f["event_time"] >= pd.Timestamp(DRIFT_AT)
    return f[~live & (f["event_time"] >= pd.Timestamp(WARM_UP))], f[live]


@pytest.mark.parametrize("seed", SEEDS)
def test_card_enumeration_is_seen_at_its_merchants_not_on_the_cards(seed):
    """Stolen cards used once each for small amounts: no card velocity, no foreign country,
    an amount inside the usual range — no card feature is flagged (the amount's W1 is about
    0.1 sigma, not significant), only the merchant category mix (mcc: 5% of the traffic goes
    to 3 merchants), which the model does not read. The waves at those merchants are seen by
    a feature it reads: the merchant's count in the hour; without the drift it is not flagged."""
    assert check(seed, "card-enumeration").drifted_features == ["mcc"]
    settings = MonitoringSettings()
    col = ["merchant_activity__count_1h"]
    for drift, flagged in ((None, []), ("card-enumeration", col)):
        reference, _ = merchant_halves(seed, None)
        _, live = merchant_halves(seed, drift)
        clusters = [cluster_ids(h[settings.cluster_key], h["event_time"], settings.cluster_block)
                    for h in (reference, live)]
        report = detect_samples(reference[col], live[col], settings, *clusters)
        assert report.drifted_features == flagged, report.to_dict()
