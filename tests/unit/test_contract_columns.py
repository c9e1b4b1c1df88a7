"""The sink's fast path (``skewless.contract_columns``, ``PartitionBatch._add_block``) against
the per-event path (``Contract.parse_message``, ``PartitionBatch`` with ``blocks=False``).

Blocks of valid events in every form the contract accepts, mixed with hostile ones (every
field of every contract: wrong types, nulls, bad times, non-UTC offsets, NaN/inf, huge ints,
unicode, extra, missing and duplicate fields, invalid JSON, empty values, two objects in
one value, newlines), must give:

1. from the block reader, only rows the per-event path accepts, with the same values;
2. from a batch, the same batches, the same files with the same Arrow values, and the same
   dead letters with the same reasons in the same order, whichever path read them.
"""

from __future__ import annotations

import json
import math
import struct
import tempfile
from datetime import datetime, timezone
from types import SimpleNamespace

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import ingestion.batch as batch_module
from ingestion.batch import PartitionBatch, Record
from skewless.contract_columns import MIN_SPLIT, block_reader
from skewless.contracts import (AMOUNT, BOOL, CODE2, CODE3, INT, LABELS, PREDICTIONS, PROB, STR, TIME, TRANSACTIONS,
                                Contract)
from skewless.lake_layout import LakeLayout

from tests.unit.test_batch_properties import GOOD, KAFKA_TS, huge_ints, json_values, odd_text, timestamps

READ = [TRANSACTIONS, LABELS]  # the contracts with a block reader
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# --- valid values in every form the per-event path accepts --------------------------------

ascii_text = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20)
text_ok = st.one_of(
    ascii_text, ascii_text,
    st.tuples(ascii_text, st.sampled_from([" ", "  "]), ascii_text).map("".join),  # inner spaces
    st.sampled_from(["café", "東京", "x" * 256, "ﬁ", "Ωmega", "a\u00a0b"]),  # any script (per event)
)


@st.composite
def time_ok(draw) -> str:
    """An event time in [2000, 2100) in the forms ``fromisoformat`` reads: Z, +00:00, other
    offsets, 0-6 digits of fraction, a space for the T, minutes only."""
    ts = draw(st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2099, 12, 30)))
    text = ts.strftime("%Y-%m-%dT%H:%M:%S")
    digits = draw(st.integers(0, 6))
    if digits:
        text += "." + f"{ts.microsecond:06d}"[:digits]
    form = draw(st.sampled_from(["Z", "Z", "+00:00", "-00:00", "+05:30", "-23:59", "space", "minutes", "+0000"]))
    if form == "space":
        return text.replace("T", " ") + "Z"
    if form == "minutes":
        return text[:16] + "Z"
    return text + form


amount_ok = st.one_of(st.floats(min_value=0.01, max_value=1_000_000.0), st.integers(1, 1_000_000),
                      st.sampled_from([0.01, 1_000_000.0, 1e6, 12.5]))
ok_for_kind = {STR: text_ok, CODE2: st.sampled_from(["DE", "US", "FR"]), CODE3: st.sampled_from(["EUR", "USD"]),
               TIME: time_ok(), AMOUNT: amount_ok, PROB: st.floats(0.0, 1.0), BOOL: st.booleans(),
               INT: st.integers(1, 2)}
# Hostile values of every kind (and of any JSON type).
bad_for_kind = {TIME: timestamps() | st.sampled_from(["2026-02-30T00:00:00Z", "2026-01-01T24:00:00Z",
                                                      "2026-01-01T10:00:00.1234567Z", "2026-01-01", "20260101T1000Z",
                                                      "2026-01-01T10:00:60Z", "1999-12-31T23:59:59Z",
                                                      "2100-01-01T00:00:00Z", "2026-01-01T10:00:00z"]),
                AMOUNT: huge_ints | st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
                    [0.00999, 1000000.0000001, -0.0, 0, 10**30, True]),
                INT: huge_ints | st.sampled_from([0, 3, 2**31, -(2**31) - 1, 2.0, True, "2"]),
                STR: odd_text | st.sampled_from([" a", "a ", "a\tb", "\x7f", "a\nb", "\u200b", 5, True]),
                CODE2: odd_text | st.sampled_from(["de", "D", "DEU", "ÄÖ", "D1"]),
                CODE3: odd_text | st.sampled_from(["eur", "EU", "EURO", "€UR"]),
                BOOL: st.sampled_from([0, 1, "true", None, 1.0])}


def _pairs_to_json(pairs: list[tuple[str, object]]) -> bytes:
    """An object from (name, value) pairs, duplicates kept (the stdlib writes NaN, huge ints)."""
    return ("{" + ",".join(f"{json.dumps(k)}:{json.dumps(v, allow_nan=True)}" for k, v in pairs) + "}").encode()


@st.composite
def event_pairs(draw, contract: Contract, hostile: bool) -> list[tuple[str, object]]:
    pairs = []
    for f in contract.fields:
        roll = draw(st.integers(0, 9))
        if not f.required and roll == 0:
            continue  # absent
        if not f.required and roll == 1:
            pairs.append((f.name, None))
            continue
        pairs.append((f.name, draw(ok_for_kind[f.kind])))
    if hostile:
        for _ in range(draw(st.integers(1, 2))):
            i = draw(st.integers(0, len(pairs) - 1))
            name = pairs[i][0]
            kind = {f.name: f.kind for f in contract.fields}.get(name, STR)  # (an extra field: as text)
            how = draw(st.sampled_from(["kind", "kind", "any", "null", "drop", "dup", "extra"]))
            if how == "kind":
                pairs[i] = (name, draw(bad_for_kind[kind]))
            elif how == "any":
                pairs[i] = (name, draw(json_values))
            elif how == "null":
                pairs[i] = (name, None)
            elif how == "drop":
                del pairs[i]
            elif how == "dup":  # the same field twice (orjson: the last one wins)
                pairs.insert(draw(st.integers(0, len(pairs))), (name, draw(ok_for_kind[kind] | bad_for_kind[kind])))
            else:
                pairs.insert(draw(st.integers(0, len(pairs))), (draw(odd_text | st.just("extra")), draw(json_values)))
            if not pairs:
                break
    return pairs


@st.composite
def message(draw, contract: Contract) -> tuple[bytes | None, bytes | None]:
    kind = draw(st.sampled_from(["valid"] * 6 + ["hostile"] * 3 + ["raw"]))
    if kind == "raw":
        value = draw(st.one_of(
            st.none(), st.binary(max_size=60), json_values.map(lambda v: json.dumps(v, allow_nan=True).encode()),
            st.sampled_from([b"", b" ", b"{", b"{}", b"[]", b"null", b"\xff\xfe", b"{} {}", b'{"a":1}{"b":2}',
                             b"\n", b'{"x":\n1}'])))
        key = draw(st.none() | st.binary(max_size=8))
        return key, value
    pairs = draw(event_pairs(contract, hostile=kind == "hostile"))
    value = _pairs_to_json(pairs)
    form = draw(st.integers(0, 9))
    if form == 0:
        value = value[:-1] + b"\n" + value[-1:]  # a newline inside the object
    elif form == 1:
        value = b" " + value + b" "  # whitespace around it
    elif form == 2 and kind == "hostile":
        value = value + _pairs_to_json(pairs)  # two objects in one value
    elif form == 3 and kind == "hostile":
        value = value[: draw(st.integers(0, len(value) - 1))]  # cut short
    elif form == 4 and kind == "hostile":
        value = value[:-1] + b" " * 70_000 + b"}"  # over max_event_bytes
    key_value = dict(pairs).get(contract.key_field)
    key = draw(st.sampled_from(["none", "empty", "right", "right", "right", "wrong"]))
    if key == "none":
        return None, value
    if key == "empty":
        return b"", value
    if key == "right" and isinstance(key_value, str):
        return key_value.encode("utf-8", "surrogatepass"), value
    return b"someone-else", value


def blocks(contract: Contract, min_size: int = 1, max_size: int = 80):
    return st.lists(message(contract), min_size=min_size, max_size=max_size)


# --- 1. the block reader accepts only what the per-event path accepts, with the same values ----

def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack("<d", a) == struct.pack("<d", b) or (math.isnan(a) and math.isnan(b))
    return a == b and type(a) is type(b)


def _lake_row(contract: Contract, row: dict) -> dict:
    """The per-event row as its Arrow values (``from_pylist`` with the lake schema)."""
    schema = contract.arrow_schema()
    schema = pa.schema([f for f in schema if f.name in {g.name for g in contract.fields}])
    got = pa.Table.from_pylist([row], schema=schema).to_pylist()[0]
    return {k: v for k, v in got.items() if v is not None}


@pytest.mark.parametrize("contract", READ, ids=lambda c: c.name)
@SETTINGS
@given(data=st.data())
def test_the_block_reader_accepts_only_rows_the_contract_accepts_with_the_same_values(contract, data):
    messages = data.draw(blocks(contract))
    reader = block_reader(contract)
    parts = reader.read([k for k, _ in messages], [v for _, v in messages])
    seen = [p for pos, _ in parts for p in pos.tolist()]
    assert len(seen) == len(set(seen)) and all(list(pos) == sorted(pos) for pos, _ in parts)
    _check_read(contract, messages)


@pytest.mark.parametrize("contract", READ, ids=lambda c: c.name)
def test_the_block_reader_accepts_the_common_forms_of_valid_events(contract):
    """The fast path is the path: valid events in their common form are all read as a block."""
    good = GOOD[contract.name]
    messages = []
    for i in range(100):
        event = {**good, contract.id_field: f"id {i}"}  # an inner space is plain ASCII text
        if contract is TRANSACTIONS:
            event.update(amount=[1, 0.01, 1e6, 12.34][i % 4], event_time=f"2026-01-{1 + i % 28:02d}T10:00:0{i % 10}."
                         f"{i:0{1 + i % 6}d}{'Z' if i % 2 else '+00:00'}", mcc=[None, "5411"][i % 2])
            if i % 3 == 0:
                del event["mcc"]
        key = [None, b"", event[contract.key_field].encode()][i % 3]
        messages.append((key, orjson.dumps(event)))
    parts = block_reader(contract).read([k for k, _ in messages], [v for _, v in messages])
    assert sum(len(p) for p, _ in parts) == len(messages)


def test_a_contract_with_a_free_form_object_has_no_block_reader():
    assert block_reader(PREDICTIONS) is None
    assert block_reader(TRANSACTIONS) is not None and block_reader(LABELS) is not None


@pytest.mark.parametrize("bad", [
    b'{"amount": 1.5, "amount": 2.5}', b"{", b"[1]", b"", None, b'{"extra": 1}', b'{"amount": NaN}',
    b'{"amount": "1.5"}', b'{"schema_version": 1.0}', b'{"schema_version": 99999999999999999999}'])
def test_one_hostile_message_sends_only_its_part_of_the_block_per_event(bad):
    good = GOOD[TRANSACTIONS.name]
    messages = [orjson.dumps({**good, "transaction_id": f"t{i}"}) for i in range(200)]
    if bad is not None and bad.startswith(b'{"') and b"extra" not in bad and b"schema" not in bad:
        bad = orjson.dumps(good)[:-1] + b"," + bad[1:]  # the hostile field inside a whole event
    messages[137] = bad
    parts = block_reader(TRANSACTIONS).read([None] * 200, messages)
    accepted = sorted(p for pos, _ in parts for p in pos.tolist())
    assert 137 not in accepted
    assert len(accepted) >= 200 - 1 - MIN_SPLIT  # the rest of the block is still read as a block


# Every hostile value of a field's kind, and of any kind (each put in an otherwise good event).
EDGE = {
    TIME: ["1999-12-31T23:59:59Z", "2100-01-01T00:00:00Z", "2099-12-31T23:59:59.999999Z", "2000-01-01T00:00:00Z",
           "2026-02-30T00:00:00Z", "2026-02-29T00:00:00Z", "2024-02-29T12:00:00Z", "2026-04-31T00:00:00Z",
           "2026-13-01T00:00:00Z", "2026-01-01T24:00:00Z", "2026-01-01T10:60:00Z", "2026-01-01T10:00:60Z",
           "2026-01-01T10:00:00.1234567Z", "2026-01-01T10:00:00.5Z", "2026-01-01T10:00:00.Z", "2026-01-01T10:00:00,5Z",
           "2026-01-01", "2026-01-01T10:00:00", "2026-01-01T10:00:00z", "2026-01-01t10:00:00Z",
           "2026-01-01T10:00:00+01:00", "2000-01-01T00:30:00+01:00", "2099-12-31T23:30:00-01:00",
           "2026-01-01T10:00:00-00:00", "2026-01-01T10:00:00+0000", "2026-01-01T10:00:00+00:00:01",
           "20260101T100000Z", "2026-01-01 10:00:00Z", " 2026-01-01T10:00:00Z", "2026-01-01T10:00:00Z ",
           "2026-01-01T10:00:00Z\\n", "\\uff12\\uff10\\uff12\\uff16-01-01T10:00:00Z", "9999-12-31T23:59:59-23:59",
           "0001-01-01T00:00:00+23:59", "2026-01-01T10:00Z", "+2026-01-01T10:00:00Z"],
    AMOUNT: [0.00999, 0.01, 1e6, 1000000.0000001, 1000001, 1, -1, -0.0, 0, 0.0, float("nan"), float("inf"),
             float("-inf"), 10**30, 2**63, 2**64, 5e-324, 1e308, "12.5"],
    PROB: [0, 1, 0.5, -0.0, 1.0000001, -1e-300, float("nan"), 2**64, "0.5"],
    INT: [0, 1, 2, 3, -1, 2**31, -(2**31) - 1, 2**63, 2**64, 1.0, 2.0, "2"],
    STR: ["", " ", "   ", " a", "a ", "a b", "a  b", "a\\tb", "a\\nb", "\\u0000", "a\\u0000b", "\\u007f", "raw\ttab", "\\u200b",
          "\\ud800",          "\\ufeff", "\\u202e", "é", "東京", "x" * 256, "x" * 257, "~!@#$%^&*()_+{}|:<>?", "\\\\", "\\\"", "a/b", 5, 1.5],
    CODE2: ["de", "D", "DEU", "ÄÖ", "D1", "DE\\n", "\\uff24\\uff25", " DE", 1],
    CODE3: ["eur", "EU", "EURO", "€UR", "EU1", "EUR ", 1],
    BOOL: [True, False, 0, 1, "true", 1.0],
}
ANY = [None, True, False, [], {}, [1], {"a": 1}, "", 1, -1.5]


def _edge_messages(contract: Contract) -> list[tuple[bytes | None, bytes | None]]:
    """Good events with unique ids, and between them every hostile value in every field, and
    hostile messages: missing, duplicate and extra fields, bad keys, bad JSON."""
    good = GOOD[contract.name]
    n = 0

    def event(**changes) -> list:
        nonlocal n
        n += 1
        pairs = [(k, v) for k, v in {**good, contract.id_field: f"id-{n}"}.items()]
        return [(k, changes.get(k, v)) for k, v in pairs]

    def enc(pairs) -> bytes:  # the stdlib writes NaN, huge ints; strings in EDGE carry JSON escapes
        return ("{" + ",".join(f'"{k}":' + (f'"{v}"' if isinstance(v, str) else json.dumps(v, allow_nan=True))
                               for k, v in pairs) + "}").encode()

    hostile = []
    for f in contract.fields:
        for value in EDGE[f.kind] + ANY:
            hostile.append((None, enc(event(**{f.name: value}))))
        pairs = event()
        hostile.append((None, enc([p for p in pairs if p[0] != f.name])))  # missing
        for dup in (pairs[[p[0] for p in pairs].index(f.name)][1], None, "x y", 7):  # twice: the last wins per event
            hostile.append((None, enc(pairs + [(f.name, dup)])))
            hostile.append((None, enc([(f.name, dup)] + pairs)))
    pairs = event()
    hostile += [(None, enc(pairs + [("extra", 1)])), (None, enc(pairs + [("extra", None)])),
                (None, enc(pairs + [("", None)])), (b"someone-else", enc(event())), (b"", enc(event())),
                (None, None), (None, b""), (None, b" "), (None, b"{"), (None, b"{}"), (None, b"[]"), (None, b"null"),
                (None, enc(pairs) + enc(event())), (None, enc(pairs)[:-1] + b"\n}"), (None, b" " + enc(event())),
                (None, enc(pairs)[:-1] + b" " * 70_000 + b"}"), (None, b"\xff" + enc(event())),
                (None, enc(event()).replace(b'-', b"-\xff", 1)), (None, enc(event()).replace(b'-', b"-\xc3\xa9", 1))]
    goods = [(None, enc(event())) for _ in range(2 * GOOD_AROUND)]
    return hostile, goods


GOOD_AROUND = 20  # good events on each side of a hostile one: its block is read, its value checked


def _check_read(contract: Contract, messages: list) -> int:
    """The block reader's rows of ``messages`` are the per-event path's; returns how many."""
    parts = block_reader(contract).read([k for k, _ in messages], [v for _, v in messages])
    accepted = 0
    for pos, rows in parts:
        for p, got in zip(pos.tolist(), rows.to_pylist()):
            key, value = messages[p]
            try:
                row = contract.parse_message(key, value)
            except Exception as exc:  # noqa: BLE001
                raise AssertionError(f"the block reader accepted {value[:200]!r}: {exc}") from None
            want = _lake_row(contract, row)
            got = {k: v for k, v in got.items() if v is not None}
            assert set(got) == set(want) and all(_same(got[k], want[k]) for k in want), (value, got, want)
            accepted += 1
    return accepted


@pytest.mark.parametrize("contract", READ, ids=lambda c: c.name)
def test_every_hostile_value_of_every_field_is_read_as_the_contract_reads_it(contract):
    hostile, goods = _edge_messages(contract)
    accepted = 0
    for m in hostile:  # each among good events: a block the reader reads unless it refuses the hostile one
        accepted += _check_read(contract, goods[:GOOD_AROUND] + [m] + goods[GOOD_AROUND:]) == len(goods) + 1
    assert accepted >= 10  # the valid edge values (2000-01-01T00:00:00Z, 0.01, 1e6, "a b", ...) read as blocks
    # All of them in one batch (the hostile ones side by side), read as blocks or per event.
    messages = [m for pair in zip(hostile, goods * len(hostile)) for m in pair]
    records = [Record(o, k, v, KAFKA_TS) for o, (k, v) in enumerate(messages)]
    fast = _land(contract, records, [len(records)], _limits(), blocks=True)
    slow = _land(contract, records, [len(records)], _limits(), blocks=False)
    _assert_same(fast, slow)


# --- 2. a batch gives the same files and dead letters whichever path read it ---------------

def _limits(**kw) -> SimpleNamespace:
    base = dict(flush_records=10**9, flush_bytes=10**12, max_dates_per_batch=10**6, compression="zstd",
                row_group_records=1000)
    return SimpleNamespace(**{**base, **kw})


def _land(contract, records, polls, limits, blocks: bool):
    """Feed ``records`` poll by poll as the sink does; land each full batch. Returns per batch:
    (first, last, counts, {file name: table without ``_ingested_at``}, dead letters)."""
    out = []
    small, batch_module.BLOCK_MIN_RECORDS = batch_module.BLOCK_MIN_RECORDS, SMALL_POLL  # small polls too
    with tempfile.TemporaryDirectory() as lake:
        try:
            out = _polls(contract, records, polls, limits, blocks, LakeLayout(lake))
        finally:
            batch_module.BLOCK_MIN_RECORDS = small
    return out


SMALL_POLL = 24  # the least records read as a block in these tests (a failed block splits down to 16)


def _polls(contract, records, polls, limits, blocks, layout):
    out = []
    batch = PartitionBatch(contract.name, 0, contract, limits, blocks=blocks)
    lo = 0
    for size in polls:
        poll, lo = records[lo:lo + size], lo + size
        i = 0
        while i < len(poll):
            i = batch.add_records(poll, i)
            if batch.full():
                out.append(_write(batch.take(), layout))
    if len(batch):
        out.append(_write(batch.take(), layout))
    return out


def _write(batch, layout):
    br, moves, counts = batch.write_temp_files(layout)
    files, dead = {}, None
    for tmp, final in moves:
        table = pq.read_table(tmp)
        table = table.drop_columns(["_ingested_at"])
        if final.parent == layout.dead_letter_dir(batch.topic):
            dead = table.to_pylist()
        else:
            files[f"{final.parent.name}/{final.name}"] = table
    return br.first, br.last, counts, files, dead


@pytest.mark.parametrize("contract", READ, ids=lambda c: c.name)
@settings(SETTINGS, max_examples=30)
@given(data=st.data())
def test_a_batch_lands_the_same_rows_and_dead_letters_read_as_blocks_or_per_event(contract, data):
    messages = data.draw(blocks(contract, min_size=30, max_size=100))
    # Some events twice (the batch check unique_in_batch dead-letters the later copy).
    for _ in range(data.draw(st.integers(0, 3))):
        messages.insert(data.draw(st.integers(0, len(messages))), data.draw(st.sampled_from(messages)))
    stamps = data.draw(st.sampled_from(["far", "now", "none"]))
    ts = {"far": KAFKA_TS, "now": int(datetime(2026, 6, 1, tzinfo=timezone.utc).timestamp() * 1000), "none": None}
    records = [Record(o + 1000, k, v, ts[stamps]) for o, (k, v) in enumerate(messages)]
    polls, left = [], len(records)
    while left > 0:
        polls.append(min(left, data.draw(st.sampled_from([1, 5, 32, 40, 64, 500]))))
        left -= polls[-1]
    limits = _limits(**data.draw(st.fixed_dictionaries({}, optional={
        "flush_records": st.integers(1, 120), "max_dates_per_batch": st.integers(1, 6),
        "flush_bytes": st.integers(1024, 20_000)})))
    fast = _land(contract, records, polls, limits, blocks=True)
    slow = _land(contract, records, polls, limits, blocks=False)
    _assert_same(fast, slow)


def _assert_same(fast, slow):
    assert [b[:3] for b in fast] == [b[:3] for b in slow]
    for f, s in zip(fast, slow):
        assert f[4] == s[4]  # dead letters: same offsets, bytes, reasons, order
        assert sorted(f[3]) == sorted(s[3])
        for name in f[3]:
            assert f[3][name].schema == s[3][name].schema, name
            assert f[3][name].equals(s[3][name]), name


def test_the_block_path_is_taken_for_a_poll_and_the_per_event_path_for_a_trickle(monkeypatch):
    good = GOOD[TRANSACTIONS.name]
    n = batch_module.BLOCK_MIN_RECORDS
    records = [Record(o, None, orjson.dumps({**good, "transaction_id": f"t{o}"}), KAFKA_TS) for o in range(n)]
    calls = []
    batch = PartitionBatch(TRANSACTIONS.name, 0, TRANSACTIONS, _limits())
    monkeypatch.setattr(batch, "_parse", lambda k, v: calls.append(v) or TRANSACTIONS.parse_message(k, v))
    assert batch.add_records(records) == n and calls == []
    batch.add_records([Record(n, None, orjson.dumps({**good, "transaction_id": "tn"}), KAFKA_TS)])
    assert len(calls) == 1 and len(batch) == n + 1 and 1 < n


def test_polls_mostly_refused_go_per_event_for_a_while_then_as_blocks_again(monkeypatch):
    good = GOOD[TRANSACTIONS.name]
    n = batch_module.BLOCK_MIN_RECORDS
    bad = [Record(o, None, b"{nope", KAFKA_TS) for o in range(n)]
    reads = []
    batch = PartitionBatch(TRANSACTIONS.name, 0, TRANSACTIONS, _limits())
    real = batch._reader.read
    monkeypatch.setattr(batch._reader, "read", lambda k, v: reads.append(len(v)) or real(k, v))
    for _ in range(4):  # refused: read, then 1 poll per event, read, 2 per event
        batch.add_records(bad)
    assert len(reads) == 2 and len(batch.dead) == 4 * n
    batch.add_records(bad)  # the 2nd per event
    ok = [Record(o, None, orjson.dumps({**good, "transaction_id": f"t{o}"}), KAFKA_TS) for o in range(n)]
    batch.add_records(ok)  # read again, and accepted: the back-off starts over
    batch.add_records(ok)
    assert len(reads) == 4 and batch._skip_blocks == 0 and batch._backoff == 1
