"""Versioned event contracts for the Kafka topics.

A contract lists its fields, their types, whether they are required, and the contract
version that introduced them. Adding an *optional* field in a new version is a
compatible change: old files simply lack the column, and readers merge schemas
(Spark ``mergeSchema``, ``pyarrow.dataset`` unification).

``validate`` turns one decoded JSON object into a lake row or a reason it is bad; the
reason is what the dead-letter record carries.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson
import pyarrow as pa

# Event times outside this range are "absurd" and dead-lettered.
MIN_EVENT_TIME = datetime(2000, 1, 1, tzinfo=timezone.utc)
MAX_EVENT_TIME = datetime(2100, 1, 1, tzinfo=timezone.utc)
MAX_AMOUNT = 1_000_000.0

TIMESTAMP = pa.timestamp("us", tz="UTC")

# Columns every lake row carries in addition to the contract's own.
KAFKA_COLUMNS = [
    pa.field("_kafka_partition", pa.int32(), nullable=False),
    pa.field("_kafka_offset", pa.int64(), nullable=False),
    pa.field("_ingested_at", TIMESTAMP, nullable=False),
]


class InvalidEvent(ValueError):
    """An event that breaks its contract; ``str()`` is the dead-letter reason."""


def _parse_time(value: Any, name: str) -> datetime:
    if not isinstance(value, str):
        raise InvalidEvent(f"field '{name}' must be an ISO-8601 string, got {type(value).__name__}")
    try:
        ts = datetime.fromisoformat(value)  # Python 3.11+ accepts a trailing "Z"
    except ValueError:
        raise InvalidEvent(f"field '{name}' is not an ISO-8601 timestamp: {value[:40]!r}") from None
    if ts.tzinfo is None:
        raise InvalidEvent(f"field '{name}' has no timezone; event times must be UTC-aware")
    if ts.utcoffset():
        ts = ts.astimezone(timezone.utc)
    if not (MIN_EVENT_TIME <= ts < MAX_EVENT_TIME):
        raise InvalidEvent(f"field '{name}' is out of range: {value}")
    return ts


def _type_error(name: str, expected: str, value: Any) -> InvalidEvent:
    return InvalidEvent(f"field '{name}' must be {expected}, got {type(value).__name__}")


# Field kinds. Validation is one loop over (name, kind) pairs with inline checks: it runs
# once per event on the ingestion hot path, so it avoids a function call per field.
STR, CODE2, CODE3, AMOUNT, BOOL, INT, TIME = "str", "code2", "code3", "amount", "bool", "int", "time"
PROB, NUMBERS = "prob", "numbers"  # a probability in [0, 1]; a JSON object of name -> number or null
_CODE_LEN = {CODE2: 2, CODE3: 3}


def _check(kind: str, name: str, value: Any) -> Any:
    """Validate one present value of ``kind``; return the row value or raise InvalidEvent."""
    t = type(value)
    if kind is STR:
        if t is not str:
            raise _type_error(name, "a string", value)
        if not 0 < len(value) <= 256:
            raise InvalidEvent(f"field '{name}' must be a non-empty string of at most 256 characters")
        return value
    if kind is TIME:
        return _parse_time(value, name)
    if kind is AMOUNT:
        if t is not float and t is not int:
            raise _type_error(name, "a number", value)
        v = float(value)
        if not (0.0 < v <= MAX_AMOUNT):  # also false for NaN
            raise InvalidEvent(f"field '{name}' is out of range (0, {MAX_AMOUNT:g}]: {value}")
        return v
    if kind in _CODE_LEN:
        n = _CODE_LEN[kind]
        if t is not str:
            raise _type_error(name, "a string", value)
        if len(value) != n or not value.isalpha() or not value.isupper():
            raise InvalidEvent(f"field '{name}' must be a {n}-letter upper-case code: {value[:20]!r}")
        return value
    if kind is BOOL:
        if t is not bool:
            raise _type_error(name, "a boolean", value)
        return value
    if kind is INT:
        if t is not int:
            raise _type_error(name, "an integer", value)
        return value
    if kind is PROB:
        if (t is not float and t is not int) or not 0.0 <= value <= 1.0:
            raise InvalidEvent(f"field '{name}' must be a number in [0, 1], got {value!r}"[:120])
        return float(value)
    if kind is NUMBERS:
        if t is not dict or not all(type(k) is str and (v is None or type(v) in (int, float)) for k, v in value.items()):
            raise InvalidEvent(f"field '{name}' must be an object of name -> number or null")
        return orjson.dumps(value).decode()  # stored as JSON text: any reader parses it
    raise ValueError(f"unknown field kind {kind!r}")


@dataclass(frozen=True)
class Field:
    name: str
    arrow_type: pa.DataType
    kind: str
    required: bool = True
    since: int = 1


@dataclass(frozen=True)
class Contract:
    name: str
    version: int
    time_field: str  # the event-time column that decides the lake partition
    key_field: str  # the Kafka message key
    fields: tuple[Field, ...]
    # The business key: one event per id. A producer retry without idempotence can land
    # the same id at two offsets; features count it once (the first landed wins).
    id_field: str = ""

    def arrow_schema(self, present: set[str] | None = None) -> pa.Schema:
        """Schema of lake files; optional fields appear only if ``present`` has them."""
        cols = [
            pa.field(f.name, f.arrow_type, nullable=not f.required)
            for f in self.fields
            if f.required or present is None or f.name in present
        ]
        return pa.schema(cols + KAFKA_COLUMNS)

    def validate(self, event: Any) -> dict[str, Any]:
        """Return the row for a decoded event, or raise ``InvalidEvent`` with the reason."""
        if not isinstance(event, dict):
            raise InvalidEvent(f"expected a JSON object, got {type(event).__name__}")
        version = event.get("schema_version", 1)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise InvalidEvent(f"field 'schema_version' must be a positive integer: {version!r}")
        if version > self.version:
            raise InvalidEvent(
                f"schema_version {version} is newer than this consumer knows ({self.version})"
            )
        row: dict[str, Any] = {}
        get = event.get
        for f in self.fields:
            value = get(f.name)
            if value is None:
                if f.required:
                    raise InvalidEvent(f"missing required field '{f.name}'")
                continue
            row[f.name] = value if (f.kind is STR and type(value) is str and 0 < len(value) <= 256) \
                else _check(f.kind, f.name, value)
        return row


TRANSACTIONS = Contract(
    name="transactions",
    version=2,
    time_field="event_time",
    key_field="user_id",
    id_field="transaction_id",
    fields=(
        Field("schema_version", pa.int32(), INT, required=False),
        Field("transaction_id", pa.string(), STR),
        Field("user_id", pa.string(), STR),
        Field("merchant_id", pa.string(), STR),
        Field("amount", pa.float64(), AMOUNT),
        Field("currency", pa.string(), CODE3),
        Field("country", pa.string(), CODE2),
        Field("channel", pa.string(), STR),
        Field("device_id", pa.string(), STR),
        Field("event_time", TIMESTAMP, TIME),
        # v2: merchant category code (optional; absent in v1 events and files).
        Field("mcc", pa.string(), STR, required=False, since=2),
    ),
)

LABELS = Contract(
    name="labels",
    version=1,
    time_field="label_time",
    key_field="transaction_id",
    id_field="transaction_id",
    fields=(
        Field("schema_version", pa.int32(), INT, required=False),
        Field("transaction_id", pa.string(), STR),
        Field("is_fraud", pa.bool_(), BOOL),
        Field("label_time", TIMESTAMP, TIME),
    ),
)

# What the online API decided, as it decided it: written by `skewless serve`, landed like
# any topic, read by monitoring. `features` holds the exact vector the model scored.
PREDICTIONS = Contract(
    name="predictions",
    version=1,
    time_field="predicted_at",
    key_field="request_id",
    id_field="request_id",
    fields=(
        Field("schema_version", pa.int32(), INT, required=False),
        Field("request_id", pa.string(), STR),
        Field("transaction_id", pa.string(), STR),
        Field("user_id", pa.string(), STR),
        Field("merchant_id", pa.string(), STR),
        Field("amount", pa.float64(), AMOUNT),
        Field("event_time", TIMESTAMP, TIME),
        Field("predicted_at", TIMESTAMP, TIME),
        Field("model_name", pa.string(), STR),
        Field("model_version", pa.string(), STR),
        Field("feature_service", pa.string(), STR),
        Field("score", pa.float64(), PROB),
        Field("review", pa.bool_(), BOOL),
        Field("features", pa.string(), NUMBERS),
    ),
)

CONTRACTS: dict[str, Contract] = {c.name: c for c in (TRANSACTIONS, LABELS, PREDICTIONS)}


def contract_for_topic(topic: str, topics_by_contract: dict[str, str]) -> Contract:
    for name, t in topics_by_contract.items():
        if t == topic:
            return CONTRACTS[name]
    raise KeyError(f"no event contract is configured for topic '{topic}'")
