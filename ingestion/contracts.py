"""Versioned event contracts for the Kafka topics.

A contract lists its fields, their types, whether they are required, and the contract
version that introduced them. Adding an *optional* field in a new version is a
compatible change: old files simply lack the column, and readers merge schemas
(Spark ``mergeSchema``, ``pyarrow.dataset`` unification).

``validate`` turns one decoded JSON object into a lake row or a reason it is bad; the
reason is what the dead-letter record carries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

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
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidEvent(f"field '{name}' is not an ISO-8601 timestamp: {value[:40]!r}") from None
    if ts.tzinfo is None:
        raise InvalidEvent(f"field '{name}' has no timezone; event times must be UTC-aware")
    ts = ts.astimezone(timezone.utc)
    if not (MIN_EVENT_TIME <= ts < MAX_EVENT_TIME):
        raise InvalidEvent(f"field '{name}' is out of range: {value}")
    return ts


def _str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise InvalidEvent(f"field '{name}' must be a string, got {type(value).__name__}")
    if not value or len(value) > 256:
        raise InvalidEvent(f"field '{name}' must be a non-empty string of at most 256 characters")
    return value


def _amount(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidEvent(f"field '{name}' must be a number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v <= 0 or v > MAX_AMOUNT:
        raise InvalidEvent(f"field '{name}' is out of range (0, {MAX_AMOUNT:g}]: {value}")
    return v


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidEvent(f"field '{name}' must be a boolean, got {type(value).__name__}")
    return value


def _code(length: int) -> Callable[[Any, str], str]:
    def check(value: Any, name: str) -> str:
        v = _str(value, name)
        if len(v) != length or not v.isalpha() or not v.isupper():
            raise InvalidEvent(f"field '{name}' must be a {length}-letter upper-case code: {v!r}")
        return v

    return check


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidEvent(f"field '{name}' must be an integer, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class Field:
    name: str
    arrow_type: pa.DataType
    parse: Callable[[Any, str], Any]
    required: bool = True
    since: int = 1


@dataclass(frozen=True)
class Contract:
    name: str
    version: int
    time_field: str  # the event-time column that decides the lake partition
    key_field: str  # the Kafka message key
    fields: tuple[Field, ...]

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
        for f in self.fields:
            value = event.get(f.name)
            if value is None:
                if f.required:
                    raise InvalidEvent(f"missing required field '{f.name}'")
                continue
            row[f.name] = f.parse(value, f.name)
        return row


TRANSACTIONS = Contract(
    name="transactions",
    version=2,
    time_field="event_time",
    key_field="user_id",
    fields=(
        Field("schema_version", pa.int32(), _int, required=False),
        Field("transaction_id", pa.string(), _str),
        Field("user_id", pa.string(), _str),
        Field("merchant_id", pa.string(), _str),
        Field("amount", pa.float64(), _amount),
        Field("currency", pa.string(), _code(3)),
        Field("country", pa.string(), _code(2)),
        Field("channel", pa.string(), _str),
        Field("device_id", pa.string(), _str),
        Field("event_time", TIMESTAMP, _parse_time),
        # v2: merchant category code (optional; absent in v1 events and files).
        Field("mcc", pa.string(), _str, required=False, since=2),
    ),
)

LABELS = Contract(
    name="labels",
    version=1,
    time_field="label_time",
    key_field="transaction_id",
    fields=(
        Field("schema_version", pa.int32(), _int, required=False),
        Field("transaction_id", pa.string(), _str),
        Field("is_fraud", pa.bool_(), _bool),
        Field("label_time", TIMESTAMP, _parse_time),
    ),
)

CONTRACTS: dict[str, Contract] = {c.name: c for c in (TRANSACTIONS, LABELS)}


def contract_for_topic(topic: str, topics_by_contract: dict[str, str]) -> Contract:
    for name, t in topics_by_contract.items():
        if t == topic:
            return CONTRACTS[name]
    raise KeyError(f"no event contract is configured for topic '{topic}'")
