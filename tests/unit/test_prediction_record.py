"""The prediction-log record is built from the ``PREDICTIONS`` contract: every required
field in the contract's order, and the topic's own validation accepts it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson
import pytest

from serving.routes.predict import prediction_record
from serving.schemas import Transaction
from skewless.contracts import PREDICTIONS
from skewless.errors import SkewlessError

TX = {"schema_version": 2, "transaction_id": "t1", "user_id": "u1", "merchant_id": "m1", "amount": 12.5,
      "currency": "EUR", "country": "FR", "channel": "web", "device_id": "d1", "mcc": "5411",
      "event_time": "2026-03-01T12:00:00.123456+05:30"}
DECIDED = {"request_id": "r1", "predicted_at": datetime(2026, 3, 1, 6, 31, tzinfo=timezone.utc),
           "model_name": "fraud", "model_version": "v1", "feature_service": "fraud_model_v1", "score": 0.25,
           "review": False, "features": {"user_spend__count_1h": 3.0, "amount": 12.5, "gap": None}}


def test_the_record_is_the_contracts_required_fields_and_the_topic_accepts_it():
    event = {**Transaction.model_validate(TX).model_dump(), "event_epoch": 1.0}
    record = prediction_record(event, DECIDED)
    assert list(record) == [f.name for f in PREDICTIONS.fields if f.required]
    assert "schema_version" not in record  # the transaction's version is not the prediction's
    row = PREDICTIONS.validate(orjson.loads(orjson.dumps(record)))
    assert row["event_time"] == datetime(2026, 3, 1, 6, 30, 0, 123456, tzinfo=timezone.utc)
    assert row["event_time"].utcoffset() == timedelta(0) and record["event_time"].endswith("+05:30")
    assert (row["amount"], row["transaction_id"], row["score"]) == (12.5, "t1", 0.25)


def test_a_required_field_without_a_value_is_named():
    with pytest.raises(SkewlessError, match="score"):
        prediction_record(Transaction.model_validate(TX).model_dump(), {k: v for k, v in DECIDED.items() if k != "score"})
