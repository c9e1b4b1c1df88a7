"""One Kafka partition's batch: whatever arrives, every offset lands exactly once.

Arbitrary bytes, arbitrary JSON and contract-shaped events with adversarial values go
through ``PartitionBatch.add`` and ``write_temp_files``; the files are read back, and each
offset must be in exactly one of them (a date's rows or the dead letters), with
valid + dead == consumed. A single bad event never breaks a batch.
"""

from __future__ import annotations

import json
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import orjson
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import ingestion.batch as batch_module
from ingestion.batch import PartitionBatch
from skewless import event_checks
from skewless.lake_layout import LakeLayout
from skewless.contracts import (AMOUNT, CODE2, CODE3, INT, LABELS, NUMBERS, PREDICTIONS, PROB, STR, TIME, TRANSACTIONS,
                                InvalidEvent)

LIMITS = SimpleNamespace(flush_records=10**9, flush_bytes=10**12, max_dates_per_batch=10**6,
                         compression="zstd", row_group_records=1000)
GOOD = {
    TRANSACTIONS.name: {"schema_version": 2, "transaction_id": "t1", "user_id": "u1", "merchant_id": "m1",
                        "amount": 12.5, "currency": "EUR", "country": "DE", "channel": "web", "device_id": "d1",
                        "event_time": "2026-01-01T10:00:00Z", "mcc": "5411"},
    LABELS.name: {"schema_version": 1, "transaction_id": "t1", "is_fraud": True, "label_time": "2026-01-05T00:00:00Z"},
    PREDICTIONS.name: {"request_id": "r1", "transaction_id": "t1", "user_id": "u1", "merchant_id": "m1", "amount": 1.0,
                       "event_time": "2026-01-01T10:00:00Z", "predicted_at": "2026-01-01T10:00:01Z",
                       "model_name": "fraud", "model_version": "v1", "feature_service": "fs", "score": 0.5,
                       "review": False, "features": {"a": 1.0, "b": None}},
}
CONTRACTS = [TRANSACTIONS, LABELS, PREDICTIONS]
# The messages' Kafka timestamp: 2100-01-01, so that no event time in the contract's range
# is ahead of it (event_checks' not_ahead_of_kafka has tests of its own).
KAFKA_TS = 4_102_444_800_000


def land(contract, messages: list[tuple[bytes | None, bytes | None]]) -> tuple[dict, dict[int, str], set[int]]:
    """Add ``messages`` at offsets 0..n-1, write the batch, read its files back.

    Returns the batch's counts, {offset: reason} of the dead letters and the offsets of the
    valid rows, after checking that no offset is in the files twice.
    """
    with tempfile.TemporaryDirectory() as lake:
        batch = PartitionBatch(contract.name, 0, contract, LIMITS)
        for offset, (key, value) in enumerate(messages):
            batch.add(offset, key, value, KAFKA_TS)
        layout = LakeLayout(lake)
        _, moves, counts = batch.write_temp_files(layout)
        dead: dict[int, str] = {}
        valid: list[int] = []
        for tmp, final in moves:
            table = pq.read_table(tmp)
            if final.parent == layout.dead_letter_dir(contract.name):
                for row in table.to_pylist():
                    assert row["offset"] not in dead
                    assert row["reason"] and len(row["reason"]) <= batch_module.MAX_REASON
                    key, value = messages[row["offset"]]
                    assert (row["key"], row["value"]) == (key, value)  # the message as it came
                    dead[row["offset"]] = row["reason"]
            else:
                assert table.column("_kafka_partition").to_pylist() == [0] * table.num_rows
                valid += table.column("_kafka_offset").to_pylist()
    assert len(valid) == len(set(valid))
    assert not set(valid) & set(dead)
    assert sorted([*valid, *dead]) == list(range(len(messages)))
    assert counts == {"records": len(messages), "valid": len(valid), "dead_lettered": len(dead)}
    return counts, dead, set(valid)


# --- strategies ----------------------------------------------------------------------

huge_ints = st.one_of(st.integers(), st.integers(min_value=2**63 - 2, max_value=2**64 + 2),
                      st.integers(min_value=-(2**64), max_value=-(2**63) + 2), st.integers(min_value=10**300))
floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([5e-324, 1e-300, 1e308, -0.0, 0.01, 1e6])
odd_text = st.text(st.characters(codec=None), max_size=300) | st.sampled_from(
    ["", " ", "   ", "\x00", "a\x00b", "\ud800", "\udfff", "\u202e", "\ufeff", "x" * 257, "2026-01-01T10:00:00Z"])


@st.composite
def timestamps(draw) -> str:
    """ISO-8601 strings anywhere in the calendar, with offsets up to +-23:59:59.999999."""
    edges = [datetime.min, datetime.max, datetime(2000, 1, 1), datetime(2099, 12, 31, 23, 59, 59, 999999),
             datetime(2100, 1, 1)]
    naive = draw(st.sampled_from(edges) | st.datetimes())
    text = naive.isoformat()
    most = timedelta(hours=23, minutes=59, seconds=59, microseconds=999999)
    suffix = draw(st.one_of(
        st.sampled_from(["", "Z", "+23:59", "-23:59", "+24:00", "+99:99", "-00:00"]),
        st.timedeltas(min_value=-most, max_value=most).map(lambda d: datetime(2000, 1, 1, tzinfo=timezone(d))
                                                            .isoformat()[19:]),
    ))
    return text + suffix


json_values = st.recursive(
    st.none() | st.booleans() | huge_ints | floats | odd_text | timestamps(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(odd_text, inner, max_size=4),
    max_leaves=12,
)


def to_json(value) -> bytes:
    # The stdlib writes what orjson cannot: ints past 64 bits, NaN/Infinity tokens, escaped
    # lone surrogates. All of it must be dead-lettered, never break the batch.
    return json.dumps(value, ensure_ascii=True, allow_nan=True).encode()


# Adversarial values that get past a field's type check, for a field of each kind.
FOR_KIND = {TIME: timestamps(), AMOUNT: huge_ints | floats, PROB: huge_ints | floats, INT: huge_ints,
            STR: odd_text, CODE2: odd_text, CODE3: odd_text,
            NUMBERS: st.dictionaries(odd_text, st.none() | huge_ints | floats | st.booleans(), max_size=3)}


@st.composite
def contract_shaped(draw, contract) -> bytes:
    """A valid event with fields removed, replaced by adversarial values, or added."""
    event = dict(GOOD[contract.name])
    # Mostly one field at a time, so that the checks after the first failing one are reached too.
    for f in draw(st.lists(st.sampled_from(contract.fields), min_size=1, max_size=draw(st.sampled_from([1, 1, 3])),
                           unique=True)):
        how = draw(st.sampled_from(["drop", "any", "kind", "kind"]))
        if how == "drop":
            event.pop(f.name, None)
        else:
            event[f.name] = draw(json_values if how == "any" else FOR_KIND.get(f.kind, json_values))
    if draw(st.integers(0, 3)) == 0:
        event.update(draw(st.dictionaries(odd_text, json_values, max_size=2)))
    if draw(st.booleans()):  # padding: whitespace inside the object
        body = to_json(event)
        return body[:-1] + b" " * draw(st.sampled_from([1, 70_000])) + body[-1:]
    return to_json(event)


def message_values(contract):
    return st.one_of(
        st.none(), st.binary(max_size=200), st.sampled_from([b"", b"{", b"[" * 5000, b"null", b"\xff\xfe"]),
        json_values.map(to_json), contract_shaped(contract),
    )


def keys(contract):
    return st.one_of(st.none(), st.just(b""), st.binary(max_size=20),
                     st.just(GOOD[contract.name][contract.key_field].encode()))


@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: c.name)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_every_offset_lands_exactly_once_whatever_the_messages(contract, data):
    # The known-good event has an id of its own: a drawn event with GOOD's id landing first
    # would make it a second copy, dead-lettered by the batch check unique_in_batch.
    good = {**GOOD[contract.name], contract.id_field: "the-good-one"}
    good_message = (good[contract.key_field].encode(), orjson.dumps(good))
    messages = data.draw(st.lists(st.tuples(keys(contract), message_values(contract)), min_size=1, max_size=30))
    # A known-good event at a drawn place: the batch still lands it as a row.
    at = data.draw(st.integers(0, len(messages)))
    messages.insert(at, good_message)
    _, dead, valid = land(contract, messages)
    assert at in valid, dead.get(at)
    # Whatever landed as a row is what the contract accepts; of what it accepts, only what
    # a declared batch check rejects (an unknown channel, a second copy of an id) is not.
    batch_checks = {f"check {contract.name}.{c.name}:" for c in event_checks.declared(contract)}
    for offset, (key, value) in enumerate(messages):
        try:
            contract.parse_message(key, value)
            accepted = True
        except Exception:  # noqa: BLE001
            accepted = False
        if offset in valid or not accepted:
            assert accepted == (offset in valid), (offset, value[:200] if value else value, dead.get(offset))
        else:
            assert " ".join(dead[offset].split(" ", 2)[:2]) in batch_checks, dead[offset]


@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: c.name)
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_a_bad_value_in_any_one_field_is_an_invalid_event_never_another_error(contract, data):
    """The contract's own promise, field by field: a row or InvalidEvent, whatever the value."""
    f = data.draw(st.sampled_from(contract.fields))
    value = data.draw(FOR_KIND.get(f.kind, json_values) | json_values)
    event = {**GOOD[contract.name], f.name: value}
    try:
        row = contract.validate(event)
    except InvalidEvent:
        return
    assert set(row) <= {g.name for g in contract.fields}


@pytest.mark.parametrize("value", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59"])
def test_an_event_time_the_parser_used_to_overflow_is_a_dead_letter(value):
    good = GOOD[TRANSACTIONS.name]
    messages = [(b"u1", orjson.dumps(good)), (b"u1", orjson.dumps({**good, "event_time": value})),
                (b"u1", orjson.dumps({**good, "transaction_id": "t2"}))]
    counts, dead, valid = land(TRANSACTIONS, messages)
    assert counts == {"records": 3, "valid": 2, "dead_lettered": 1}
    assert valid == {0, 2} and dead == {1: f"check transactions.event_time.in_range: field 'event_time' is out of range: {value}"}


def test_an_unexpected_exception_dead_letters_its_event_with_its_type_and_message(monkeypatch):
    """A bug in a check (any exception, not only InvalidEvent) costs that event, not the batch."""
    good = GOOD[TRANSACTIONS.name]
    real = TRANSACTIONS.parse_message

    def parse(key, value):
        if b"boom" in value:
            raise OverflowError("date value out of range " + "x" * 1000)
        if b"surrogate" in value:
            raise RuntimeError("a message with a lone surrogate \ud800 in it")
        return real(key, value)

    messages = [(None, orjson.dumps(good)), (None, orjson.dumps({**good, "transaction_id": "boom"})),
                (None, orjson.dumps({**good, "transaction_id": "surrogate"})),
                (None, orjson.dumps({**good, "transaction_id": "t3"}))]
    original_init = PartitionBatch.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self._parse = parse

    monkeypatch.setattr(PartitionBatch, "__init__", init)
    counts, dead, valid = land(TRANSACTIONS, messages)
    assert counts == {"records": 4, "valid": 2, "dead_lettered": 2} and valid == {0, 3}
    assert dead[1].startswith("check transactions.contract: could not validate: OverflowError: date value out of range xxx")
    assert len(dead[1]) == batch_module.MAX_REASON
    assert dead[2] == "check transactions.contract: could not validate: RuntimeError: a message with a lone surrogate \\ud800 in it"


def test_invalid_event_reasons_are_the_contracts():
    good = GOOD[TRANSACTIONS.name]
    messages = [(None, None), (None, b"{nope"), (b"u2", orjson.dumps(good)), (None, orjson.dumps({**good, "x": 1}))]
    _, dead, _ = land(TRANSACTIONS, messages)
    for offset, (key, value) in enumerate(messages):
        with pytest.raises(InvalidEvent) as err:
            TRANSACTIONS.parse_message(key, value)
        assert dead[offset] == f"check {err.value.check_name(TRANSACTIONS.name)}: {err.value}"
