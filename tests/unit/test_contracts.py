"""Event contracts: what is valid, and a reason naming the field for everything that is not."""

from __future__ import annotations

from datetime import datetime, timezone

import orjson
import pyarrow as pa
import pytest
from hypothesis import given, settings, strategies as st

from skewless.contracts import LABELS, PREDICTIONS, TRANSACTIONS, InvalidEvent, contract_for_topic
from skewless.errors import ConfigError

TX = {"schema_version": 2, "transaction_id": "t1", "user_id": "u1", "merchant_id": "m1", "amount": 12.5,
      "currency": "EUR", "country": "DE", "channel": "web", "device_id": "d1", "event_time": "2026-01-01T10:00:00Z",
      "mcc": "5411"}
LB = {"schema_version": 1, "transaction_id": "t1", "is_fraud": True, "label_time": "2026-01-05T00:00:00Z"}


def test_a_good_event_becomes_a_typed_row():
    row = TRANSACTIONS.validate(TX)
    assert row["event_time"] == datetime(2026, 1, 1, 10, tzinfo=timezone.utc)
    assert row["amount"] == 12.5 and isinstance(row["amount"], float)
    assert row["mcc"] == "5411" and row["schema_version"] == 2
    assert TRANSACTIONS.validate({**TX, "amount": 7})["amount"] == 7.0  # ints are numbers too
    # Offsets other than UTC are converted, so the hour partition is the UTC hour.
    assert TRANSACTIONS.validate({**TX, "event_time": "2026-01-01T12:30:00+02:00"})["event_time"] == \
        datetime(2026, 1, 1, 10, 30, tzinfo=timezone.utc)
    lb = LABELS.validate(LB)
    assert lb["is_fraud"] is True and lb["label_time"] == datetime(2026, 1, 5, tzinfo=timezone.utc)


@pytest.mark.parametrize("contract,good", [(TRANSACTIONS, TX), (LABELS, LB)], ids=["transactions", "labels"])
def test_every_missing_required_field_is_named(contract, good):
    required = [f.name for f in contract.fields if f.required]
    assert required
    for name in required:
        for event in ({k: v for k, v in good.items() if k != name}, {**good, name: None}):
            with pytest.raises(InvalidEvent, match=f"missing required field '{name}'"):
                contract.validate(event)


WRONG_TYPES = {"transaction_id": 5, "user_id": 7, "merchant_id": ["m"], "amount": "12.50", "currency": 978,
               "country": {"c": "DE"}, "channel": 1.5, "device_id": False, "event_time": 1767261600,
               "mcc": 5411, "schema_version": "2"}


@pytest.mark.parametrize("name,value", sorted(WRONG_TYPES.items()))
def test_a_wrong_type_names_the_field(name, value):
    with pytest.raises(InvalidEvent, match=f"'{name}'") as err:
        TRANSACTIONS.validate({**TX, name: value})
    assert "must be" in str(err.value) or "schema_version" in str(err.value)


@pytest.mark.parametrize("name,value,problem", [
    ("amount", -1, "out of range"), ("amount", 0, "out of range"), ("amount", 1e12, "out of range"),
    ("amount", float("nan"), "out of range"), ("amount", True, "must be a number"),
    ("event_time", "1970-01-01T00:00:00Z", "out of range"), ("event_time", "2999-01-01T00:00:00Z", "out of range"),
    ("event_time", "2026-01-01T10:00:00", "no timezone"), ("event_time", "yesterday", "not an ISO-8601"),
    ("currency", "euro", "3-letter"), ("currency", "eur", "3-letter"), ("country", "DEU", "2-letter"),
    ("country", "D1", "2-letter"), ("user_id", "", "non-empty"), ("user_id", "u" * 257, "at most 256"),
    ("mcc", "", "non-empty"),
])
def test_an_absurd_value_names_the_field_and_the_problem(name, value, problem):
    with pytest.raises(InvalidEvent, match=f"'{name}'.*{problem}"):
        TRANSACTIONS.validate({**TX, name: value})


@pytest.mark.parametrize("name,value,problem", [
    ("is_fraud", "yes", "must be a boolean"), ("is_fraud", 1, "must be a boolean"),
    ("label_time", "1970-01-01T00:00:00Z", "out of range"), ("transaction_id", 3, "must be a string"),
])
def test_bad_labels_name_the_field(name, value, problem):
    with pytest.raises(InvalidEvent, match=f"'{name}'.*{problem}"):
        LABELS.validate({**LB, name: value})


@pytest.mark.parametrize("event,problem", [
    ([1, 2], "expected a JSON object"), ("text", "expected a JSON object"), (None, "expected a JSON object"),
    ({**TX, "schema_version": 3}, "schema_version 3 is newer"), ({**TX, "schema_version": 0}, "'schema_version'"),
    ({**TX, "schema_version": True}, "'schema_version'"),
])
def test_not_an_object_or_an_unknown_version(event, problem):
    with pytest.raises(InvalidEvent, match=problem):
        TRANSACTIONS.validate(event)


def test_the_v2_field_is_optional_and_v1_events_stay_valid():
    v1 = {k: v for k, v in TX.items() if k != "mcc"}
    assert "mcc" not in TRANSACTIONS.validate({**v1, "schema_version": 1})
    assert "mcc" not in TRANSACTIONS.validate({k: v for k, v in v1.items() if k != "schema_version"})
    assert "mcc" not in TRANSACTIONS.validate({**v1, "mcc": None})
    assert TRANSACTIONS.validate({**v1, "schema_version": 2, "mcc": "5812"})["mcc"] == "5812"
    mcc = next(f for f in TRANSACTIONS.fields if f.name == "mcc")
    assert not mcc.required and mcc.since == 2 and TRANSACTIONS.version == 2
    # Lake files of v1 events have no mcc column; v2 files have it, nullable; required columns are not.
    v1_schema = TRANSACTIONS.arrow_schema(present=set(v1))
    v2_schema = TRANSACTIONS.arrow_schema(present=set(TX))
    assert "mcc" not in v1_schema.names
    assert v2_schema.field("mcc").nullable and v2_schema.field("mcc").type == pa.string()
    assert not v2_schema.field("transaction_id").nullable
    assert set(v2_schema.names) - set(v1_schema.names) == {"mcc"}
    for name in ("_kafka_partition", "_kafka_offset", "_ingested_at"):
        assert name in v1_schema.names and name in v2_schema.names
    # The two schemas unify, which is what readers merging them rely on.
    assert "mcc" in pa.unify_schemas([v1_schema, v2_schema]).names


def test_contract_for_topic():
    topics = {"transactions": "tx-a", "labels": "lb-a"}
    assert contract_for_topic("tx-a", topics) is TRANSACTIONS
    assert contract_for_topic("lb-a", topics) is LABELS
    with pytest.raises(ConfigError, match="no event contract is configured for topic 'other'"):
        contract_for_topic("other", topics)


PRED = {"request_id": "r1", "transaction_id": "t1", "user_id": "u1", "merchant_id": "m1", "amount": 12.5,
        "event_time": "2026-01-01T10:00:00Z", "predicted_at": "2026-01-01T10:00:00.002Z", "model_name": "fraud",
        "model_version": "v1", "feature_service": "fraud_model_v1", "score": 0.25, "review": False,
        "features": {"user_spend__count_1h": 2.0, "user_spend__mean_amount_1h": None, "amount": 12.5}}


def test_a_prediction_record_keeps_its_vector_as_json_text():
    from skewless.contracts import PREDICTIONS

    row = PREDICTIONS.validate(PRED)
    assert row["score"] == 0.25 and row["review"] is False
    import orjson

    assert orjson.loads(row["features"]) == PRED["features"]
    assert PREDICTIONS.validate({**PRED, "score": 0})["score"] == 0.0  # a probability may be exactly 0


@pytest.mark.parametrize("field, value, reason", [
    ("score", 1.5, "'score' must be a number in [0, 1]"),
    ("score", "0.3", "'score' must be a number in [0, 1]"),
    ("features", [1, 2], "'features' must be an object of name -> number or null"),
    ("features", {"a": "x"}, "'features' must be an object of name -> number or null"),
    ("review", "yes", "'review' must be a boolean"),
])
def test_a_bad_prediction_record_names_its_field(field, value, reason):
    from skewless.contracts import PREDICTIONS

    with pytest.raises(InvalidEvent, match=reason.replace("[", r"\[").replace("]", r"\]")):
        PREDICTIONS.validate({**PRED, field: value})


# --- Issue 9: inputs that broke the parser, and the contract decisions (see the module docstring)


@pytest.mark.parametrize("value", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59",
                                   "9999-12-31T23:59:59.999999-23:59:59.999999", "0001-01-01T00:00:00+23:59:59"])
def test_an_event_time_at_the_edge_of_the_calendar_is_out_of_range_not_an_overflow(value):
    # Converting these to UTC overflows the datetime range: the reason must still be the contract's.
    with pytest.raises(InvalidEvent, match="field 'event_time' is out of range"):
        TRANSACTIONS.validate({**TX, "event_time": value})
    with pytest.raises(InvalidEvent, match="field 'label_time' is out of range"):
        LABELS.validate({**LB, "label_time": value})


def test_an_extreme_offset_inside_the_range_converts_to_utc():
    row = TRANSACTIONS.validate({**TX, "event_time": "2026-01-01T00:00:00+23:59"})
    assert row["event_time"] == datetime(2025, 12, 31, 0, 1, tzinfo=timezone.utc)


def test_the_amount_has_a_smallest_unit():
    from skewless.contracts import MAX_AMOUNT, MIN_AMOUNT

    assert MIN_AMOUNT == 0.01
    for bad in (1e-300, 5e-324, 0.009, 0.0099999, -0.01, 2**64 - 1, 10**30):
        with pytest.raises(InvalidEvent, match="field 'amount' is out of range"):
            TRANSACTIONS.validate({**TX, "amount": bad})
    for good in (MIN_AMOUNT, 1, 12.34, MAX_AMOUNT, int(MAX_AMOUNT)):
        assert TRANSACTIONS.validate({**TX, "amount": good})["amount"] == float(good)


TEXT_FIELDS = [f.name for f in TRANSACTIONS.fields if f.kind == "str"]


@pytest.mark.parametrize("name", TEXT_FIELDS)
@pytest.mark.parametrize("value", ["   ", " ", " u1", "u1 ", "u 1 "])
def test_blank_text_or_text_with_a_space_at_an_end_is_rejected(name, value):
    with pytest.raises(InvalidEvent, match=f"field '{name}' must not be blank or start or end with a space"):
        TRANSACTIONS.validate({**TX, name: value})


@pytest.mark.parametrize("name", TEXT_FIELDS)
@pytest.mark.parametrize("char", ["\x00", "\t", "\n", "\r", "\x1b", "\x7f", "\x85", "\xa0", "\u200b", "\u200e",
                                  "\u202e", "\u2028", "\u3000", "\ufeff", "\ue000", "\ud800", "\udfff", "\U000e0001"],
                         ids=repr)
def test_control_invisible_and_surrogate_characters_are_rejected_in_every_text_field(name, char):
    with pytest.raises(InvalidEvent, match=f"field '{name}' must be printable text"):
        TRANSACTIONS.validate({**TX, name: f"m{char}1"})


@pytest.mark.parametrize("value", ["u 1", "Zoë's café", "商户-42", "😀", "a" * 256, "x", "ĳ", "Ω", "d:1/2#3"])
def test_printable_text_with_inner_spaces_and_any_script_is_accepted(value):
    assert TRANSACTIONS.validate({**TX, "merchant_id": value})["merchant_id"] == value


def test_lone_surrogates_never_reach_the_contract_orjson_rejects_them():
    for raw in (b'"\\ud800"', b'"\\udfff"', b'"a\\ud800b"', b'"\xed\xa0\x80"'):
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(raw)
    body = orjson.dumps(TX).replace(b'"m1"', b'"m\\ud800"')
    with pytest.raises(InvalidEvent, match="not valid JSON"):
        TRANSACTIONS.parse_message(b"u1", body)
    # A valid pair is one character, and printable.
    assert TRANSACTIONS.parse_message(b"u1", orjson.dumps(TX).replace(b'"m1"', b'"m\\ud83d\\ude00"'))["merchant_id"] \
        == "m\U0001f600"


@pytest.mark.parametrize("value", ["ÄÖÜ", "EU€", "ＥＵＲ"])
def test_codes_are_ascii_letters(value):
    with pytest.raises(InvalidEvent, match="field 'currency' must be a 3-letter upper-case code"):
        TRANSACTIONS.validate({**TX, "currency": value})


def test_unknown_fields_are_rejected_and_named():
    with pytest.raises(InvalidEvent, match=r"unknown field 'padding': not in the transactions contract v2"):
        TRANSACTIONS.validate({**TX, "padding": "x" * 2_000_000})
    with pytest.raises(InvalidEvent, match=r"unknown fields 'a', 'b', 'c' \(\+2 more\)"):
        TRANSACTIONS.validate({**TX, "a": 1, "b": 2, "c": 3, "d": 4, "e": 5})
    with pytest.raises(InvalidEvent, match="unknown field 'is_fraud'"):  # a label field is not a transaction's
        TRANSACTIONS.validate({**TX, "is_fraud": None})
    with pytest.raises(InvalidEvent, match="unknown field") as err:
        TRANSACTIONS.validate({**TX, "k" * 100_000: 1})
    assert len(str(err.value)) < 200
    # A known optional field set to null is not unknown.
    assert "mcc" not in TRANSACTIONS.validate({**TX, "mcc": None})


def test_an_oversize_event_is_rejected_after_its_fields():
    from skewless.contracts import MAX_EVENT_BYTES, PREDICTIONS

    body = orjson.dumps(TX)
    padded = body[:-1] + b" " * (MAX_EVENT_BYTES - len(body)) + b"}"
    assert len(padded) == MAX_EVENT_BYTES and TRANSACTIONS.parse_message(None, padded)["user_id"] == "u1"
    too_big = body[:-1] + b" " * (2 * 1024 * 1024) + b"}"
    with pytest.raises(InvalidEvent, match=r"event is 2,097,3\d\d bytes, over the transactions contract's limit "
                                           r"of 65,536"):
        TRANSACTIONS.parse_message(None, too_big)
    # A bad field is the reason, whatever the size: the fields are checked first.
    with pytest.raises(InvalidEvent, match="field 'user_id' must be a non-empty string"):
        TRANSACTIONS.parse_message(None, orjson.dumps({**TX, "user_id": "u" * 100_000}))
    # A prediction's feature vector grows with the model: its topic allows 1 MiB.
    many = orjson.dumps({**PRED, "features": {f"feature_{i:05d}": i / 7 for i in range(5000)}})
    assert MAX_EVENT_BYTES < len(many) < PREDICTIONS.max_event_bytes
    assert PREDICTIONS.parse_message(b"r1", many)["request_id"] == "r1"


def test_the_message_key_must_be_the_key_field_or_absent():
    body = orjson.dumps(TX)
    for key in (None, b"", b"u1"):  # no key (console producer), or the contract's key
        assert TRANSACTIONS.parse_message(key, body)["user_id"] == "u1"
    with pytest.raises(InvalidEvent, match=r"message key 'u2' is not the event's user_id 'u1' \(transactions are "
                                           r"keyed by user_id"):
        TRANSACTIONS.parse_message(b"u2", body)
    with pytest.raises(InvalidEvent, match="message key 't1' is not the event's user_id 'u1'"):
        TRANSACTIONS.parse_message(b"t1", body)  # keyed by the business id instead: a producer bug
    with pytest.raises(InvalidEvent, match="message key '\ufffd\ufffd' is not"):
        TRANSACTIONS.parse_message(b"\xff\xfe", body)
    assert LABELS.parse_message(b"t1", orjson.dumps(LB))["transaction_id"] == "t1"
    with pytest.raises(InvalidEvent, match="is not the event's transaction_id 't1'"):
        LABELS.parse_message(b"u1", orjson.dumps(LB))
    # An event that breaks a field is dead-lettered for the field, not for its key.
    with pytest.raises(InvalidEvent, match="field 'amount'"):
        TRANSACTIONS.parse_message(b"poison", orjson.dumps({**TX, "amount": -1}))


def test_an_integer_field_fits_its_int32_column():
    from skewless.contracts import INT, STR, Contract, Field

    c = Contract("t", 1, "ts", "id", (Field("id", pa.string(), STR), Field("n", pa.int32(), INT),
                                      Field("ts", pa.timestamp("us", tz="UTC"), "time")))
    ev = {"id": "a", "ts": "2026-01-01T00:00:00Z"}
    assert c.validate({**ev, "n": 2**31 - 1})["n"] == 2**31 - 1
    for n in (2**31, -(2**31) - 1, 2**64 - 1):
        with pytest.raises(InvalidEvent, match="field 'n' is out of range for a 32-bit integer"):
            c.validate({**ev, "n": n})


def test_a_prediction_of_a_non_finite_or_huge_feature_is_json_text_or_a_reason():
    from skewless.contracts import PREDICTIONS

    assert orjson.loads(PREDICTIONS.validate({**PRED, "features": {"a": 2**64 - 1}})["features"]) == {"a": 2**64 - 1}
    for features in ({"a": {"b": 1}}, {"a": 2**64}, {"\ud800": 1.0}):  # the last two: not JSON-encodable
        with pytest.raises(InvalidEvent, match="'features' must be an object of name -> number or null"):
            PREDICTIONS.validate({**PRED, "features": features})


SAMPLES = ["u1", "u 1", "a b c", " a", "a ", "   ", "", "a\x00", "\t", "a\nb", "Zoë", "商户", "😀", "a\xa0b", "a\u200bb",
           "\u202eab", "a\u2028", "\ue000", "\ufeff", "a\x85", "\x7f", "a  b", "-", "a" * 256, "a" * 257]


@pytest.mark.parametrize("value", SAMPLES, ids=repr)
def test_the_text_pattern_for_the_api_states_the_same_rule_as_the_contract(value):
    """``TEXT_PATTERN`` + ``MAX_TEXT_LENGTH`` (what the online API's JSON Schema says) accept
    exactly what ``text_problem`` (the topic's rule) accepts, checked with pydantic's engine."""
    from typing import Annotated

    from pydantic import Field as PydField, TypeAdapter, ValidationError

    from skewless.contracts import MAX_TEXT_LENGTH, TEXT_PATTERN, text_problem

    api = TypeAdapter(Annotated[str, PydField(pattern=TEXT_PATTERN, max_length=MAX_TEXT_LENGTH)])
    try:
        api.validate_python(value)
        api_ok = True
    except ValidationError:
        api_ok = False
    assert api_ok == (text_problem(value) is None)
    # ... and the topic's fast path agrees with its full check.
    try:
        TRANSACTIONS.validate({**TX, "device_id": value})
        topic_ok = True
    except InvalidEvent:
        topic_ok = False
    assert topic_ok == api_ok


# --- the compiled field checks agree with ``_check``, the one definition of each rule


def _reference_fields(contract, event: dict) -> dict:
    """``validate``'s field checks written plainly: every present field through ``_check``."""
    from skewless.contracts import _check

    row = {}
    for f in contract.fields:
        value = event.get(f.name)
        if value is None:
            if f.required:
                raise InvalidEvent(f"missing required field '{f.name}'", "required", f.name)
            continue
        row[f.name] = _check(f.kind, f.name, value)
    return row


def _outcome(fn, contract, event):
    try:
        row = fn(contract, event)
    except InvalidEvent as exc:
        return ("invalid", str(exc), exc.check, exc.field)
    except Exception as exc:  # noqa: BLE001 - compared, not judged
        return ("error", type(exc).__name__, str(exc))
    return ("row", {k: (type(v), v) for k, v in row.items()})


_TIMES = ["2026-01-01T10:00:00Z", "2026-01-01T10:00:00+00:00", "2026-01-01T10:00:00-00:00",
          "2026-01-01T10:00:00.123456Z", "2026-01-01T10:00:00.1234567Z", "2026-01-01T10:00:00.1Z",
          "2000-01-01T00:00:00Z", "1999-12-31T23:59:59.999999Z", "2099-12-31T23:59:59.999999Z", "2100-01-01T00:00:00Z",
          "2000-01-01T00:30:00+01:00", "2099-12-31T23:30:00-01:00", "2026-06-01T12:00:00+05:30", "2026-01-01T10:00:00",
          "2026-01-01", "2026-01-01T10:00Z", "20260101T100000Z", "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59",
          "yesterday", "", "2026-01-01T10:00:00ZZ", "2026-13-01T10:00:00Z"]
_TEXTS = ["u1", "", " ", "u 1", " u1", "u1 ", "a\tb", "a\u200bb", "é", "x" * 256, "x" * 257, "EUR", "eur", "DE", "D1",
          "DEU", "ÉUR", "ＥＵＲ", "5411", "pos"]
_NUMBERS = [0, 1, -1, 7, 0.0, 0.005, 0.01, 0.5, 1.0, 1.5, 12.5, 1e6, 1e6 + 1, 1e12, 2**31 - 1, 2**31, -(2**31),
            -(2**31) - 1, 2**70, float("nan"), float("inf"), -float("inf"), True, False]
_OTHERS = [None, [1], {"a": 1.0, "b": None}, {"a": "x"}, {}, "1.5"]
_VALUES = st.sampled_from(_TIMES + _TEXTS + _NUMBERS + _OTHERS)


@pytest.mark.parametrize("contract", [TRANSACTIONS, LABELS, PREDICTIONS], ids=lambda c: c.name)
def test_the_compiled_checks_give_what_check_gives_for_every_value_of_every_field(contract):
    good = {"transactions": TX, "labels": LB, "predictions": PRED}[contract.name]
    pool = _TIMES + _TEXTS + _NUMBERS + _OTHERS
    for f in contract.fields:
        for value in pool:
            event = {**good, f.name: value}
            compiled = _outcome(lambda c, e: c._fields(e.get), contract, event)
            assert compiled == _outcome(_reference_fields, contract, event), (f.name, value)


@pytest.mark.parametrize("contract", [TRANSACTIONS, LABELS, PREDICTIONS], ids=lambda c: c.name)
@given(data=st.data())
@settings(max_examples=200, deadline=None)
def test_the_compiled_checks_report_the_first_bad_field_as_check_does(contract, data):
    good = {"transactions": TX, "labels": LB, "predictions": PRED}[contract.name]
    event = dict(good)
    for f in contract.fields:  # any fields replaced by any values: the first problem in field order wins
        if data.draw(st.booleans()):
            event[f.name] = data.draw(_VALUES)
    compiled = _outcome(lambda c, e: c._fields(e.get), contract, event)
    assert compiled == _outcome(_reference_fields, contract, event)


@pytest.mark.parametrize("value", _TIMES)
def test_every_time_form_gives_what_check_gives(value):
    event = {**TX, "event_time": value}
    assert _outcome(lambda c, e: c._fields(e.get), TRANSACTIONS, event) == _outcome(_reference_fields, TRANSACTIONS, event)
