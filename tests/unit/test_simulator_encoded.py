"""The simulator's two paths: ``simulate`` (dicts) is byte for byte what it was before the
chunked path was added, and ``simulate_encoded`` (bytes, chunk by chunk, what the producer
sends) is byte for byte ``orjson.dumps`` of ``simulate``'s dicts — so every figure measured
on seeded traffic stays valid whichever path made it."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

import numpy as np
import orjson
import pytest

from ingestion.producer import _interleave, _interleaved
from ingestion.simulator import bad_messages, simulate, simulate_encoded
from skewless.contracts import LABELS, TRANSACTIONS

START = datetime(2026, 3, 1, tzinfo=timezone.utc)

# (seed, events, days, drift, drift start as a fraction of the period, schema version), fraud
# transactions, drifted transactions, and the sha256 of every transaction then every label as
# orjson lines — taken from the implementation before the chunked path (commit ab84656).
BEFORE = [
    ((1, 5000, 7, None, None, 2), 75, 0,
     "2bd6e3c0fc99646d7cd18be9ed33d787b2974fba31452daf2825c0eca06b0e98"),
    ((42, 20000, 30, None, None, 2), 300, 0,
     "2e0d74ea5cd09bc2cc7055d755a1e2ee531949f9bb3e6df195940259db41411c"),
    ((7, 3000, 3, None, None, 1), 45, 0,
     "fcc829c76ebe4ea9527acc01dc83cda398bbb221847a80d18c6adb3984a74d6f"),
    ((3, 12000, 10, 'amount-shift', 0.5, 2), 180, 6135,
     "d11790014a8c3d77a2dc3fbdffddb2240237859cf030a382e244aff4d02ce81f"),
    ((5, 12000, 10, 'fraud-pattern', 0.3, 2), 430, 8456,
     "8d0a3cda5d8da042bcabd48f4d02a5de16ca7842f30041ae10edfed52cb5701f"),
    ((9, 12000, 10, 'country-mix', 0.0, 2), 180, 12000,
     "5021774c1ba470a19178a179906f74aa3bb656e3ab11fada845ced22a074c80e"),
    ((11, 12000, 10, 'broken-field', 0.6, 2), 180, 4820,
     "81ff14147f4a3b88132423c9a29c82bcf32d7a2da3067ede3a7a8df4bef501d3"),
    ((13, 15000, 10, 'card-enumeration', 0.5, 2), 595, 7516,
     "8e79e34eccef0415cd27fc9b5fc8f785c69f1204dc115eeaa75ab639780f2a8c"),
    ((2, 50, 1, None, None, 2), 1, 0,
     "e8d4792ca1e1affdc79bdeda7c60d411cd9294ebed8179ff073b4076b628a176"),
]


def _sim(seed, n, days, drift, frac, sv, encoded=False):
    ds = START + timedelta(days=days) * frac if drift else None
    fn = simulate_encoded if encoded else simulate
    return fn(n, seed, START, days, schema_version=sv, drift=drift, drift_start=ds)


@pytest.mark.parametrize("case,fraud,drifted,digest", BEFORE, ids=[f"{c[0]}-{c[3]}" for c, *_ in BEFORE])
def test_simulate_is_byte_for_byte_what_it_was(case, fraud, drifted, digest):
    sim = _sim(*case)
    h = hashlib.sha256()
    for r in sim.transactions:
        h.update(orjson.dumps(r) + b"\n")
    h.update(b"--labels--\n")
    for r in sim.labels:
        h.update(orjson.dumps(r) + b"\n")
    assert (h.hexdigest(), sim.fraud_transactions, sim.drifted_transactions) == (digest, fraud, drifted)


@pytest.mark.parametrize("case", [c for c, *_ in BEFORE], ids=[f"{c[0]}-{c[3]}-v{c[5]}" for c, *_ in BEFORE])
def test_encoded_chunks_are_the_dicts_serialised(case):
    sim, enc = _sim(*case), _sim(*case, encoded=True)
    want = [(r[TRANSACTIONS.key_field].encode(), orjson.dumps(r)) for r in sim.transactions]
    # An odd chunk size: chunk edges must not show.
    got = [m for chunk in enc.transaction_chunks(chunk=997) for m in chunk]
    assert got == want
    assert enc.label_messages() == [(r[LABELS.key_field].encode(), orjson.dumps(r)) for r in sim.labels]
    assert (enc.transactions, enc.labels, enc.fraud_transactions, enc.drifted_transactions) == (
        len(sim.transactions), len(sim.labels), sim.fraud_transactions, sim.drifted_transactions)


def test_encoded_chunks_are_bounded_and_in_event_time_order():
    enc = simulate_encoded(25_000, 4, START, 5)
    sizes, last = [], ""
    for chunk in enc.transaction_chunks(chunk=4_000):
        sizes.append(len(chunk))
        times = [orjson.loads(v)["event_time"] for _, v in chunk]
        assert times == sorted(times) and times[0] >= last
        last = times[-1]
    assert sizes == [4_000] * 6 + [1_000]


@pytest.mark.parametrize("n_good,n_bad,chunk", [(1000, 37, 100), (500, 0, 64), (10, 30, 3), (0, 0, 5)])
def test_streamed_interleave_is_the_listed_one(n_good, n_bad, chunk):
    good = [(f"k{i}".encode(), f"v{i}".encode()) for i in range(n_good)]
    bad = [b for _, b in bad_messages(n_bad, 3)]
    want = _interleave(good, bad, np.random.default_rng(11))
    chunks = lambda: iter([good[i:i + chunk] for i in range(0, n_good, chunk)])  # noqa: E731
    got = [m for c in _interleaved(chunks, n_good, bad, np.random.default_rng(11)) for m in c]
    assert got == want
