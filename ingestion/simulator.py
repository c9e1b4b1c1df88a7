"""A seeded simulator of payments traffic with fraud, chargeback labels and bad messages.

Users have habits: a home country and currency, one or two devices, a handful of
favourite merchants, a typical amount, a daily rhythm. Legitimate traffic sometimes
travels, changes device, or spends big, so no single field separates fraud from it.

Fraud (about 1.5% of transactions) comes in *bursts*: a compromised card is used several
times within minutes to an hour, at merchants the user never visited, from a foreign
country, on a new device, for amounts well above the user's habit. Windowed features
(count in the last hour, distinct merchants in 24h, amount against the 7-day mean) see
it; a single transaction's fields mostly do not.

Chargebacks arrive 1-30 days after the transaction (most within two weeks); about 80% of fraud is ever
labelled, and a label that would arrive after the simulated horizon (start + days) has
not arrived yet and is not produced. A few legitimate disputes produce
``is_fraud=False`` labels.

The same seed and start give the same events, byte for byte — through ``simulate``
(dicts) or ``simulate_encoded`` (the producer's path: the same events serialised with
orjson chunk by chunk in event-time order, for millions of events).

**Drift** (``drift=KIND``, default none): from ``drift_start`` (default: the first event)
the traffic changes in one way, the rest staying what it would have been without drift —
the same seed, start and days give byte-for-byte the same events before ``drift_start``,
and the same number of transactions overall. Each kind draws from its own random stream
(seeded by the seed and the kind), so a drifted run is as deterministic as any other:

* ``amount-shift``: every amount x ``AMOUNT_SHIFT_FACTOR`` (1.5: prices or a currency moved).
* ``fraud-pattern``: card testing, a fraud the traffic never showed: bursts of 8-25 tiny
  amounts (0.50-5.00) within minutes, on a compromised card's new device, at one of a few
  merchants, from the card's home country, on the web — where the usual fraud is a few
  big foreign purchases. ``FRAUD_PATTERN_SHARE`` (3%) of the drifted transactions, taking
  the place of legitimate ones; labelled like any fraud.
* ``card-enumeration``: fraud moves to where a model trained before it reads "safe": stolen
  cards (other users' cards, ``ENUMERATION_SHARE`` = 5% of the drifted transactions, in the
  place of legitimate ones) each used **once**, for a **small** amount
  (``ENUMERATION_AMOUNT``: 2-20, inside the usual range, where the usual fraud is 2.5-12
  times the card's habit), from the card's home country — so no card velocity, no foreign
  country, no big amount — in *waves* of 20-60 cards within 5-20 minutes at one of a few
  merchants (``ENUMERATION_MERCHANTS``). What gives it away is the merchant's burst of
  payments in the hour (``merchant_activity`` counts no merchant reached before, which
  before the shift meant a busy, legitimate shop) with small first-time amounts: learnable
  from labels after the shift. Labelled like any fraud.
* ``country-mix``: ``COUNTRY_MIX_SHARE`` (40%) of the legitimate transactions come from a
  new mix of countries (``NEW_COUNTRY_WEIGHTS``: Brazil, India, Nigeria, Poland grow), the
  currency following the country.
* ``broken-field``: an upstream field turns null: ``mcc`` is null on every drifted event.
  The contract requires every other field (a null amount or country is dead-lettered, not
  drift), so ``mcc``, the one optional field, is the one that can break and still arrive
  as a valid event; it needs ``schema_version`` 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterator

import numpy as np
import orjson

from skewless.contracts import LABELS, MAX_AMOUNT, MIN_AMOUNT, TRANSACTIONS

COUNTRIES = ["US", "GB", "DE", "FR", "NL", "ES", "IT", "PL", "SE", "BR", "IN", "NG"]
COUNTRY_WEIGHTS = np.array([30, 14, 12, 10, 6, 6, 6, 4, 3, 4, 3, 2], dtype=float)
CURRENCY = {"US": "USD", "GB": "GBP", "DE": "EUR", "FR": "EUR", "NL": "EUR", "ES": "EUR",
            "IT": "EUR", "PL": "PLN", "SE": "SEK", "BR": "BRL", "IN": "INR", "NG": "NGN"}
CHANNELS = ["pos", "web", "app"]
MCCS = ["5411", "5812", "5999", "4111", "5732", "7995", "5944", "4814"]
# Share of transactions in each UTC hour of the day (busy midday and evening, quiet night).
HOURLY = np.array([1, 0.6, 0.4, 0.3, 0.3, 0.5, 1.2, 2.5, 3.5, 4, 4.2, 4.6,
                   5.2, 5, 4.5, 4.3, 4.6, 5.4, 6, 6.2, 5.5, 4.2, 2.8, 1.7])
HOURLY = HOURLY / HOURLY.sum()
FRAUD_SHARE = 0.015
LABEL_RATE = 0.8
DISPUTE_RATE = 0.002

# -- drift (see the module docstring)
DRIFT_KINDS = ("amount-shift", "fraud-pattern", "country-mix", "broken-field", "card-enumeration")
AMOUNT_SHIFT_FACTOR = 1.5
FRAUD_PATTERN_SHARE = 0.03
ENUMERATION_SHARE = 0.05
ENUMERATION_AMOUNT = (2.0, 20.0)
ENUMERATION_MERCHANTS = 3
ENUMERATION_WAVE = (20, 61)  # cards per wave
ENUMERATION_SPAN_MIN = (5, 21)  # a wave's length in minutes
COUNTRY_MIX_SHARE = 0.4
NEW_COUNTRY_WEIGHTS = np.array([12, 6, 5, 4, 3, 3, 3, 12, 2, 18, 20, 12], dtype=float)
BROKEN_FIELD = "mcc"
_DRIFT_SALT = {kind: 1000 + i for i, kind in enumerate(DRIFT_KINDS)}


@dataclass(frozen=True)
class Simulation:
    """Valid events, sorted by their own time, ready to serialise."""

    transactions: list[dict]
    labels: list[dict]
    fraud_transactions: int
    drift: str | None = None  # the drift kind, if any
    drift_start: datetime | None = None  # when it started
    drifted_transactions: int = 0  # transactions at or after drift_start


def default_start(days: int) -> datetime:
    """Midnight UTC ``days`` days ago: the simulated traffic ends today."""
    today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days)


def _iso(ts: np.ndarray) -> list[str]:
    # numpy datetime64[us] -> "2026-01-01T12:34:56.123456Z"
    return [s + "Z" for s in np.datetime_as_string(ts, unit="us")]


def drift_start_at(start: datetime, days: int, drift_from: datetime | None = None,
                   fraction: float | None = None) -> datetime:
    """When drift starts: at ``drift_from``, or ``fraction`` of the way through the
    simulated period, or (neither given) at ``start``; a ValueError outside the period."""
    if drift_from is not None and fraction is not None:
        raise ValueError("give the drift's start as a time or as a fraction of the period, not both")
    start = start.astimezone(timezone.utc)
    end = start + timedelta(days=days)
    if fraction is not None:
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"the drift's start as a fraction of the period must be in [0, 1), got {fraction}")
        return start + (end - start) * fraction
    if drift_from is None:
        return start
    if drift_from.tzinfo is None:
        raise ValueError("the drift's start time needs a timezone")
    if not start <= drift_from < end:
        raise ValueError(f"the drift's start {drift_from.isoformat()} is outside the simulated period "
                         f"[{start.isoformat()}, {end.isoformat()})")
    return drift_from.astimezone(timezone.utc)


def _check(events: int, days: int, schema_version: int, drift: str | None, drift_start: datetime | None) -> None:
    if events < 1:
        raise ValueError("events must be at least 1")
    if days < 1:
        raise ValueError("days must be at least 1")
    if drift is None and drift_start is not None:
        raise ValueError("a drift start without a drift kind")
    if drift is not None and drift not in DRIFT_KINDS:
        raise ValueError(f"unknown drift kind {drift!r}: expected one of {', '.join(DRIFT_KINDS)}")
    if drift == "broken-field" and schema_version < 2:
        raise ValueError(f"drift broken-field nulls '{BROKEN_FIELD}', which schema version {schema_version} lacks: "
                         "use schema version 2")


class _Devices:
    """Each transaction's device id by (unsorted) index, without a string per transaction:
    a legitimate one is ``d<seed>-<user>-<slot>`` or, on a new device, ``nd<seed>-<index>``;
    a fraud burst's ``fd<seed>-<burst>``; the drifts overwrite some (``devices[j] = ...``)."""

    def __init__(self, seed: int, users: np.ndarray, slot: np.ndarray, new: np.ndarray, burst: np.ndarray) -> None:
        self.seed, self.users, self.slot, self.new, self.burst = seed, users, slot, new, burst
        self.n_legit = len(users)
        self.overrides: dict[int, str] = {}

    def __setitem__(self, j: int, value: str) -> None:
        self.overrides[j] = value

    def of(self, idx: np.ndarray) -> list[str]:
        """The device ids of the transactions at ``idx``, in that order."""
        seed, n_legit, over = self.seed, self.n_legit, self.overrides
        legit = np.minimum(idx, n_legit - 1) if n_legit else np.zeros_like(idx)
        users = self.users[legit].tolist() if n_legit else [0] * len(idx)
        slots = self.slot[legit].tolist() if n_legit else [0] * len(idx)
        new = self.new[legit].tolist() if n_legit else [False] * len(idx)
        bursts = self.burst[np.clip(idx - n_legit, 0, None)].tolist() if len(self.burst) else [0] * len(idx)
        out = []
        for j, u, s, nd, b in zip(idx.tolist(), users, slots, new, bursts):
            d = over.get(j)
            if d is None:
                if j >= n_legit:
                    d = f"fd{seed}-{b}"
                elif nd:
                    d = f"nd{seed}-{j}"
                else:
                    d = f"d{seed}-{u}-{s}"
            out.append(d)
        return out


@dataclass
class _Columns:
    """A simulation as arrays (one index per transaction, unsorted; ``order`` sorts them by
    event time): what ``simulate`` turns into dicts and ``simulate_encoded`` into bytes."""

    seed: int
    schema_version: int
    start64: np.datetime64
    order: np.ndarray  # transaction i (event-time order) is index order[i]
    users: np.ndarray
    micros: np.ndarray
    merchants: np.ndarray
    amounts: np.ndarray
    country: np.ndarray
    channel: np.ndarray
    null_field: np.ndarray
    merchant_mcc: np.ndarray
    devices: _Devices
    label_pos: np.ndarray  # positions i (event-time order) of the labelled transactions, by label time
    label_micros: np.ndarray  # their label times
    label_fraud: np.ndarray
    fraud_transactions: int
    drift: str | None
    drift_start: datetime | None
    drifted_transactions: int

    def transaction_fields(self, lo: int, hi: int) -> dict[str, list]:
        """Transactions ``lo`` to ``hi`` (event-time order) as lists of their fields' values."""
        j = self.order[lo:hi]
        country = self.country[j].tolist()
        fields: dict[str, list] = {
            "transaction_id": [f"tx{self.seed}-{i:09d}" for i in range(lo, hi)],
            "user_id": [f"u{u:06d}" for u in self.users[j].tolist()],
            "merchant_id": [f"m{m:05d}" for m in self.merchants[j].tolist()],
            "amount": self.amounts[j].tolist(),
            "currency": [CURRENCY[COUNTRIES[c]] for c in country],
            "country": [COUNTRIES[c] for c in country],
            "channel": [CHANNELS[c] for c in self.channel[j].tolist()],
            "device_id": self.devices.of(j),
            "event_time": _iso(self.start64 + self.micros[j].astype("timedelta64[us]")),
        }
        if self.schema_version >= 2:
            mcc = self.merchant_mcc[self.merchants[j]].tolist()
            fields["mcc"] = [None if null else MCCS[c] for c, null in zip(mcc, self.null_field[j].tolist())]
        return fields

    def labels(self) -> list[dict]:
        label_times = _iso(self.start64 + self.label_micros.astype("timedelta64[us]"))
        return [
            {"schema_version": 1, "transaction_id": f"tx{self.seed}-{i:09d}", "is_fraud": f, "label_time": lt}
            for i, f, lt in zip(self.label_pos.tolist(), self.label_fraud.tolist(), label_times)
        ]


def _generate(events: int, seed: int, start: datetime, days: int, schema_version: int,
              drift: str | None, drift_start: datetime | None) -> _Columns:
    """The simulation's random draws, as arrays (~110 bytes per transaction)."""
    _check(events, days, schema_version, drift, drift_start)
    rng = np.random.default_rng(seed)
    start = start.astimezone(timezone.utc)
    start64 = np.datetime64(start.replace(tzinfo=None), "us")
    horizon_us = days * 86_400_000_000
    if drift is not None:
        drift_start = drift_start_at(start, days, drift_start)
    drift_us = (drift_start - start) // timedelta(microseconds=1) if drift is not None else horizon_us

    n_users = max(20, events // 40)
    n_merchants = max(10, events // 150)
    n_fraud = int(round(events * FRAUD_SHARE))
    n_legit = events - n_fraud

    # --- the population and its habits
    home = rng.choice(len(COUNTRIES), size=n_users, p=COUNTRY_WEIGHTS / COUNTRY_WEIGHTS.sum())
    typical = rng.lognormal(3.3, 0.7, size=n_users)  # typical amount per user
    activity = rng.gamma(1.5, 1.0, size=n_users)
    channel_pref = rng.integers(0, len(CHANNELS), size=n_users)
    popularity = 1.0 / np.arange(1, n_merchants + 1) ** 0.9
    popularity /= popularity.sum()
    favourites = rng.choice(n_merchants, size=(n_users, 8), p=popularity)
    merchant_country = rng.choice(len(COUNTRIES), size=n_merchants, p=COUNTRY_WEIGHTS / COUNTRY_WEIGHTS.sum())
    merchant_mcc = rng.integers(0, len(MCCS), size=n_merchants)
    del merchant_country  # drawn for the stream's sake (same seed, same events)

    # --- legitimate traffic (temporaries dropped as soon as used: memory is per transaction)
    users = rng.choice(n_users, size=n_legit, p=activity / activity.sum())
    day = rng.integers(0, days, size=n_legit)
    hour = rng.choice(24, size=n_legit, p=HOURLY)
    micros = (day * 86_400 + hour * 3600) * 1_000_000
    del day, hour
    micros += rng.integers(0, 3_600_000_000, size=n_legit)
    fav = rng.random(n_legit) < 0.9
    merchants = np.where(fav, favourites[users, rng.integers(0, 8, size=n_legit)],
                         rng.choice(n_merchants, size=n_legit, p=popularity))
    del fav
    amounts = typical[users] * rng.lognormal(0.0, 0.5, size=n_legit)
    big = rng.random(n_legit) < 0.01  # legit big-ticket purchases
    amounts[big] *= rng.uniform(3, 10, size=big.sum())
    del big
    travel = rng.random(n_legit) < 0.03
    country = np.where(travel, rng.integers(0, len(COUNTRIES), size=n_legit), home[users])
    del travel
    device_slot = np.where(rng.random(n_legit) < 0.8, 0, 1).astype(np.int8)
    new_device = rng.random(n_legit) < 0.01
    channel = np.where(rng.random(n_legit) < 0.8, channel_pref[users], rng.integers(0, 3, size=n_legit))

    # --- fraud bursts on compromised cards
    burst_sizes = []
    remaining = n_fraud
    while remaining > 0:
        k = int(min(remaining, rng.integers(3, 9)))
        burst_sizes.append(k)
        remaining -= k
    f_users, f_micros, f_merchants, f_amounts, f_country, f_burst = [], [], [], [], [], []
    risky = rng.choice(n_merchants, size=max(3, n_merchants // 20), replace=False)
    for b, k in enumerate(burst_sizes):
        u = int(rng.integers(0, n_users))
        t0 = int(rng.integers(0, horizon_us - 3_600_000_000))
        span = int(rng.integers(5, 61)) * 60_000_000
        f_users += [u] * k
        f_micros += sorted((t0 + rng.integers(0, span, size=k)).tolist())
        f_merchants += rng.choice(risky, size=k).tolist()
        f_amounts += (typical[u] * rng.uniform(2.5, 12, size=k)).tolist()
        foreign = [c for c in range(len(COUNTRIES)) if c != home[u]]
        f_country += [int(rng.choice(foreign))] * k
        f_burst += [b] * k

    n = n_legit + n_fraud
    devices = _Devices(seed, users, device_slot, new_device, np.array(f_burst, dtype=np.int64))
    all_users = np.concatenate([users, np.array(f_users, dtype=np.int64)])
    all_micros = np.concatenate([micros, np.array(f_micros, dtype=np.int64)])
    del micros
    all_merchants = np.concatenate([merchants, np.array(f_merchants, dtype=np.int64)])
    del merchants
    all_amounts = np.round(np.concatenate([amounts, np.array(f_amounts)]), 2)
    del amounts
    all_country = np.concatenate([country, np.array(f_country, dtype=np.int64)])
    del country
    all_channel = np.concatenate([channel, rng.integers(1, 3, size=n_fraud)])
    del channel
    is_fraud = np.concatenate([np.zeros(n_legit, bool), np.ones(n_fraud, bool)])
    null_field = np.zeros(n, bool)
    if drift is not None:
        t = _Traffic(all_users, all_micros, all_merchants, all_amounts, all_country, all_channel, is_fraud,
                     devices, null_field, home, n_merchants, n_legit, horizon_us)
        _DRIFTS[drift](t, drift_us, np.random.default_rng([seed, _DRIFT_SALT[drift]]), seed)
    order = np.lexsort((np.arange(n), all_micros))

    # --- chargebacks (and a few legitimate disputes), as they arrive
    fraud_sorted = is_fraud[order]
    draw = rng.random(n)
    labelled = np.where(fraud_sorted, draw < LABEL_RATE, draw < DISPUTE_RATE)
    del draw
    # Most chargebacks come within a week or two; none later than 30 days.
    delay_days = 1.0 + np.minimum(29.0, rng.exponential(6.0, size=n))
    delay_us = (delay_days * 86_400_000_000).astype(np.int64)
    del delay_days
    label_micros = all_micros[order] + delay_us
    del delay_us
    keep = labelled & (label_micros < horizon_us)
    idx = np.flatnonzero(keep)
    idx = idx[np.argsort(label_micros[idx], kind="stable")]
    return _Columns(
        seed=seed, schema_version=schema_version, start64=start64, order=order, users=all_users,
        micros=all_micros, merchants=all_merchants, amounts=all_amounts, country=all_country,
        channel=all_channel, null_field=null_field, merchant_mcc=merchant_mcc, devices=devices,
        label_pos=idx, label_micros=label_micros[idx], label_fraud=fraud_sorted[idx],
        fraud_transactions=int(is_fraud.sum()), drift=drift, drift_start=drift_start if drift else None,
        drifted_transactions=int((all_micros >= drift_us).sum()) if drift else 0)


def simulate(events: int, seed: int, start: datetime, days: int = 7, schema_version: int = 2,
             drift: str | None = None, drift_start: datetime | None = None) -> Simulation:
    """Generate ``events`` transactions over ``days`` days from ``start``, and their labels;
    with ``drift``, traffic from ``drift_start`` (default: ``start``) drifts that way.

    Holds every event as a dict (~0.8 KB each: 8 GB for 10M events): for millions of events
    to send or write, use ``simulate_encoded``, the same events serialised chunk by chunk."""
    cols = _generate(events, seed, start, days, schema_version, drift, drift_start)
    transactions: list[dict] = []
    n = len(cols.order)
    for lo in range(0, n, _CHUNK):
        fields = cols.transaction_fields(lo, min(n, lo + _CHUNK))
        names = list(fields)
        for values in zip(*fields.values()):
            tx = {"schema_version": schema_version}
            tx.update(zip(names, values))
            transactions.append(tx)
    return Simulation(transactions, cols.labels(), cols.fraud_transactions, cols.drift, cols.drift_start,
                      cols.drifted_transactions)


_CHUNK = 100_000


@dataclass
class EncodedSimulation:
    """``simulate``'s events as the producer sends them — ``(key, orjson bytes)``, the key the
    contract's ``key_field`` — byte for byte, made chunk by chunk in event-time order instead
    of held as dicts. The draws are still made for the whole run at once (that is what keeps
    the events equal to ``simulate``'s): ~110 bytes per transaction (the producer's peak RSS:
    364 MB at 1M events, 1.3 GB at 10M), where the dicts take ~0.8 KB (and the producer
    used to hold their serialised messages beside them: ~13 GB for 10M)."""

    columns: _Columns
    transactions: int
    labels: int
    fraud_transactions: int
    drift: str | None
    drift_start: datetime | None
    drifted_transactions: int

    def transaction_chunks(self, chunk: int = _CHUNK) -> Iterator[list[tuple[bytes, bytes]]]:
        cols = self.columns
        key_field = TRANSACTIONS.key_field
        v2 = cols.schema_version >= 2
        head = f'{{"schema_version":{cols.schema_version},'
        for lo in range(0, self.transactions, chunk):
            f = cols.transaction_fields(lo, min(self.transactions, lo + chunk))
            # orjson's own float text, in one call per chunk.
            amounts = orjson.dumps(f["amount"]).decode()[1:-1].split(",")
            mcc = [("null" if m is None else f'"{m}"') for m in f["mcc"]] if v2 else None
            keys = f[key_field]
            out = []
            for i, (tid, uid, mid, amt, cur, ctry, chan, dev, et) in enumerate(zip(
                    f["transaction_id"], f["user_id"], f["merchant_id"], amounts, f["currency"], f["country"],
                    f["channel"], f["device_id"], f["event_time"])):
                value = (f'{head}"transaction_id":"{tid}","user_id":"{uid}","merchant_id":"{mid}","amount":{amt},'
                         f'"currency":"{cur}","country":"{ctry}","channel":"{chan}","device_id":"{dev}",'
                         f'"event_time":"{et}"' + (f',"mcc":{mcc[i]}}}' if v2 else "}"))
                out.append((keys[i].encode(), value.encode()))
            yield out

    def label_messages(self) -> list[tuple[bytes, bytes]]:
        return [(r[LABELS.key_field].encode(), orjson.dumps(r)) for r in self.columns.labels()]


def simulate_encoded(events: int, seed: int, start: datetime, days: int = 7, schema_version: int = 2,
                     drift: str | None = None, drift_start: datetime | None = None) -> EncodedSimulation:
    """``simulate``, serialised: the same events, as the bytes ``orjson.dumps`` gives for
    ``simulate``'s dicts, produced chunk by chunk (see ``EncodedSimulation``)."""
    cols = _generate(events, seed, start, days, schema_version, drift, drift_start)
    return EncodedSimulation(cols, len(cols.order), len(cols.label_pos), cols.fraud_transactions, cols.drift,
                             cols.drift_start, cols.drifted_transactions)

# -- drift: each kind rewrites the traffic's arrays in place from drift_us on ---------------------

@dataclass
class _Traffic:
    """The simulated transactions as arrays (one index per transaction, unsorted), before
    they become events."""

    users: np.ndarray
    micros: np.ndarray  # since start
    merchants: np.ndarray
    amounts: np.ndarray
    country: np.ndarray  # index into COUNTRIES
    channel: np.ndarray  # index into CHANNELS
    is_fraud: np.ndarray
    devices: _Devices  # set a device with devices[j] = ...
    null_field: np.ndarray  # BROKEN_FIELD null
    home: np.ndarray  # each user's home country
    n_merchants: int
    n_legit: int  # indices below are legitimate transactions
    horizon_us: int


def _amount_shift(t: _Traffic, drift_us: int, rng: np.random.Generator, seed: int) -> None:
    hit = t.micros >= drift_us
    t.amounts[hit] = np.clip(np.round(t.amounts[hit] * AMOUNT_SHIFT_FACTOR, 2), MIN_AMOUNT, MAX_AMOUNT)


def _country_mix(t: _Traffic, drift_us: int, rng: np.random.Generator, seed: int) -> None:
    legit = np.arange(len(t.micros)) < t.n_legit
    hit = np.flatnonzero(legit & (t.micros >= drift_us) & (rng.random(len(t.micros)) < COUNTRY_MIX_SHARE))
    t.country[hit] = rng.choice(len(COUNTRIES), size=len(hit), p=NEW_COUNTRY_WEIGHTS / NEW_COUNTRY_WEIGHTS.sum())


def _broken_field(t: _Traffic, drift_us: int, rng: np.random.Generator, seed: int) -> None:
    t.null_field[t.micros >= drift_us] = True


def _fraud_pattern(t: _Traffic, drift_us: int, rng: np.random.Generator, seed: int) -> None:
    """Card-testing bursts in the place of legitimate transactions after drift_us."""
    slots = np.flatnonzero((np.arange(len(t.micros)) < t.n_legit) & (t.micros >= drift_us))
    budget = int(round(len(slots) * FRAUD_PATTERN_SHARE))
    latest = t.horizon_us - 15 * 60_000_000  # a burst spans at most 15 minutes, inside the horizon
    if budget == 0 or latest <= drift_us:
        return
    slots = rng.permutation(slots)[:budget]
    testers = rng.choice(t.n_merchants, size=min(t.n_merchants, 3), replace=False)
    used = b = 0
    while used < budget:
        k = int(min(budget - used, rng.integers(8, 26)))
        idx = slots[used:used + k]
        u = int(rng.integers(0, len(t.home)))
        t0 = int(rng.integers(drift_us, latest))
        span = int(rng.integers(2, 16)) * 60_000_000
        t.users[idx] = u
        t.micros[idx] = np.sort(t0 + rng.integers(0, span, size=k))
        t.merchants[idx] = int(rng.choice(testers))
        t.amounts[idx] = np.round(rng.uniform(0.5, 5.0, size=k), 2)
        t.country[idx] = t.home[u]
        t.channel[idx] = CHANNELS.index("web")
        t.is_fraud[idx] = True
        for j in idx.tolist():
            t.devices[j] = f"ctd{seed}-{b}"
        used += k
        b += 1


def _card_enumeration(t: _Traffic, drift_us: int, rng: np.random.Generator, seed: int) -> None:
    """Waves of stolen cards, each used once for a small amount at one merchant, in the place
    of legitimate transactions after drift_us."""
    slots = np.flatnonzero((np.arange(len(t.micros)) < t.n_legit) & (t.micros >= drift_us))
    budget = int(round(len(slots) * ENUMERATION_SHARE))
    latest = t.horizon_us - ENUMERATION_SPAN_MIN[1] * 60_000_000  # a wave ends inside the horizon
    if budget == 0 or latest <= drift_us:
        return
    slots = rng.permutation(slots)[:budget]
    shops = rng.choice(t.n_merchants, size=min(t.n_merchants, ENUMERATION_MERCHANTS), replace=False)
    used = wave = 0
    while used < budget:
        k = int(min(budget - used, rng.integers(*ENUMERATION_WAVE)))
        idx = slots[used:used + k]
        cards = rng.choice(len(t.home), size=k, replace=k > len(t.home))
        t0 = int(rng.integers(drift_us, latest))
        span = int(rng.integers(*ENUMERATION_SPAN_MIN)) * 60_000_000
        t.users[idx] = cards
        t.micros[idx] = np.sort(t0 + rng.integers(0, span, size=k))
        t.merchants[idx] = int(rng.choice(shops))
        t.amounts[idx] = np.round(rng.uniform(*ENUMERATION_AMOUNT, size=k), 2)
        t.country[idx] = t.home[cards]
        t.channel[idx] = CHANNELS.index("web")
        t.is_fraud[idx] = True
        for i, j in enumerate(idx.tolist()):
            t.devices[j] = f"ced{seed}-{wave}-{i}"
        used += k
        wave += 1


_DRIFTS = {"amount-shift": _amount_shift, "fraud-pattern": _fraud_pattern, "country-mix": _country_mix,
           "broken-field": _broken_field, "card-enumeration": _card_enumeration}


def bad_messages(count: int, seed: int, contract_name: str = "transactions") -> Iterator[tuple[str, bytes]]:
    """Malformed messages of every kind the consumer must dead-letter: (kind, bytes)."""
    import orjson

    rng = np.random.default_rng(seed + 7919)
    good_tx = {"schema_version": 2, "transaction_id": "txbad", "user_id": "u000001", "merchant_id": "m00001",
               "amount": 12.5, "currency": "EUR", "country": "DE", "channel": "web", "device_id": "dbad",
               "event_time": "2026-01-01T00:00:00Z"}
    good_label = {"schema_version": 1, "transaction_id": "txbad", "is_fraud": True,
                  "label_time": "2026-01-02T00:00:00Z"}
    base = good_tx if contract_name == TRANSACTIONS.name else good_label
    required = [f.name for f in (TRANSACTIONS if contract_name == TRANSACTIONS.name else LABELS).fields if f.required]
    kinds = ["not_json", "missing_field", "wrong_type", "absurd_value", "not_an_object"]
    for i in range(count):
        kind = kinds[int(rng.integers(0, len(kinds)))]
        ev = dict(base, transaction_id=f"bad{seed}-{i}")
        if kind == "not_json":
            yield kind, b"{this is not json" + str(i).encode()
            continue
        if kind == "not_an_object":
            yield kind, b"[1, 2, 3]"
            continue
        if kind == "missing_field":
            ev.pop(required[int(rng.integers(0, len(required)))])
        elif kind == "wrong_type":
            if "amount" in ev:
                ev["amount"] = "12.50"
            else:
                ev["is_fraud"] = "yes"
        elif kind == "absurd_value":
            if "amount" in ev:
                ev["amount"] = -5.0 if i % 2 else 1e12
            else:
                ev["label_time"] = "1970-01-01T00:00:00Z"
        yield kind, orjson.dumps(ev)
