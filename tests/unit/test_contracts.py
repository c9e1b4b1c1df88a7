"""Event contracts: what is valid, and a reason naming the field for everything that is not."""

from __future__ import annotations

from datetime import datetime, timezone

import pyarrow as pa
import pytest

from skewless.contracts import LABELS, TRANSACTIONS, InvalidEvent, contract_for_topic

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
    with pytest.raises(KeyError, match="other"):
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
