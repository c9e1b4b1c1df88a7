"""The declared event checks (``skewless.event_checks``): each fails on its bad value, names
itself, and passes the good one; the batch turns a failing row into a dead letter."""

from __future__ import annotations

import tempfile

import orjson
import pandas as pd
import pytest

from ingestion.batch import PartitionBatch
from skewless import event_checks
from skewless.contracts import LABELS, PREDICTIONS, TRANSACTIONS
from skewless.lake_layout import LakeLayout
from skewless.settings import IngestSettings

T = pd.Timestamp
KAFKA = T("2026-03-01T10:00:00Z")


def tx_frame(**changes) -> pd.DataFrame:
    """Two good transactions (ids t0, t1), the first changed by ``changes``."""
    rows = [{"schema_version": 2, "transaction_id": f"t{i}", "user_id": "u1", "merchant_id": "m1", "amount": 12.5,
             "currency": "EUR", "country": "DE", "channel": "web", "device_id": "d1",
             "event_time": T("2026-03-01T09:00:00Z"), "mcc": "5411"} for i in range(2)]
    rows[0].update(changes)
    df = pd.DataFrame(rows, index=pd.Index([100, 101], name="_kafka_offset"))
    df[event_checks.KAFKA_TIME] = KAFKA
    return df


# (the changed field's bad value, its good value, the check that must name the failure)
CASES = [
    ({"amount": 0.0}, {"amount": 0.01}, "transactions.amount.in_range"),
    ({"amount": 1e6 + 1}, {"amount": 1e6}, "transactions.amount.in_range"),
    ({"currency": "eur"}, {"currency": "USD"}, "transactions.currency.code"),
    ({"country": "DEU"}, {"country": "GB"}, "transactions.country.code"),
    ({"channel": "fax"}, {"channel": "pos"}, "transactions.channel.allowed"),
    ({"event_time": T("1999-12-31T23:59:59Z")}, {"event_time": T("2000-01-01T00:00:00Z")},
     "transactions.event_time.in_range"),
    ({"event_time": KAFKA + pd.Timedelta(seconds=3601)}, {"event_time": KAFKA + pd.Timedelta(seconds=3600)},
     "transactions.event_time.not_ahead_of_kafka"),
    ({"transaction_id": "t1"}, {"transaction_id": "t2"}, "transactions.transaction_id.unique_in_batch"),
    ({"amount": None}, {"amount": 99.0}, "transactions.amount.not_null"),
]


@pytest.mark.parametrize("bad,good,check", CASES, ids=[c[2] + "=" + repr(list(c[0].values())[0]) for c in CASES])
def test_each_check_fails_on_the_bad_value_by_name_and_passes_the_good(bad, good, check):
    failed = event_checks.failures(TRANSACTIONS, tx_frame(**bad))
    if check.endswith("unique_in_batch"):  # the second copy of t1 fails, the first lands
        assert list(failed) == [101] and failed[101][0] == check
    else:
        assert list(failed) == [100] and failed[100][0] == check, failed
    assert event_checks.failures(TRANSACTIONS, tx_frame(**good)) == {}


def test_a_row_failing_several_checks_reports_the_first_declared():
    failed = event_checks.failures(TRANSACTIONS, tx_frame(amount=0.0, channel="fax"))
    assert failed[100][0] == "transactions.amount.in_range"


def test_an_unknown_kafka_time_is_not_held_against_the_event():
    df = tx_frame(event_time=T("2030-01-01T00:00:00Z"))
    df[event_checks.KAFKA_TIME] = event_checks.kafka_times([None, 1_000], df.index)  # none; not a clock
    assert event_checks.failures(TRANSACTIONS, df) == {}


def test_every_contract_declares_id_uniqueness_and_its_time_range():
    for contract in (TRANSACTIONS, LABELS, PREDICTIONS):
        names = {c.name for c in event_checks.declared(contract)}
        assert f"{contract.id_field}.unique_in_batch" in names
        assert f"{contract.time_field}.in_range" in names
    assert "score.in_range" in {c.name for c in event_checks.declared(PREDICTIONS)}


def test_the_batch_dead_letters_a_failing_row_with_its_bytes_and_the_checks_name():
    good = {"schema_version": 2, "transaction_id": "t0", "user_id": "u1", "merchant_id": "m1", "amount": 12.5,
            "currency": "EUR", "country": "DE", "channel": "web", "device_id": "d1",
            "event_time": "2026-03-01T09:00:00Z"}
    messages = [orjson.dumps(good), orjson.dumps({**good, "transaction_id": "t1", "channel": "fax"}),
                orjson.dumps(good), orjson.dumps({**good, "transaction_id": "t2", "amount": -1})]
    batch = PartitionBatch("tx", 0, TRANSACTIONS, IngestSettings())
    for i, value in enumerate(messages):
        batch.add(i, b"u1", value, int(KAFKA.timestamp() * 1000))
    with tempfile.TemporaryDirectory() as lake:
        _, _, counts = batch.write_temp_files(LakeLayout(lake))
    assert counts == {"records": 4, "valid": 1, "dead_lettered": 3}
    dead = {d[0]: d for d in batch.dead}
    assert dead[1][3].startswith("check transactions.channel.allowed: channel must be one of pos, web, app")
    assert dead[2][3].startswith("check transactions.transaction_id.unique_in_batch:")
    assert dead[3][3].startswith("check transactions.amount.in_range:")  # the contract's own, per event
    assert dead[1][1:3] == (b"u1", messages[1])  # the message as it came, for a replay
