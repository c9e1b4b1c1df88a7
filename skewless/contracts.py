"""Versioned event contracts for the Kafka topics.

A contract lists its fields, their types, whether they are required, and the contract
version that introduced them. Adding an *optional* field in a new version is a
compatible change: old files simply lack the column, and every reader reads the lake
with the contract's full schema (``skewless.lake``: pyarrow, Spark and DuckDB alike), so
the column is null where a file lacks it, never silently dropped.

``parse_message`` turns one Kafka message (key and value bytes) into a lake row or a
reason it is bad; ``validate`` does the same for one decoded JSON object. The reason is
what the dead-letter record carries, and it names the first problem found.

What a topic accepts, decided case by case (the online API shares these rules: the
constants under "Rules shared with the online API" below, and ``text_problem``):

- Text (ids, channel, mcc, model names): 1 to 256 characters, printable (Python's
  ``str.isprintable``: no control characters such as NUL, tab or newline, no invisible
  format characters such as zero-width spaces or bidi overrides, no separators but the
  ASCII space, no surrogates, private-use or unassigned code points), and no space at
  either end, so a blank id (three spaces) is rejected. " u1" and "u1" would be two users
  whose features never meet; the contract rejects rather than trims, so the id in the lake
  is the id the producer sent.
- Lone surrogates cannot reach a contract: orjson rejects them (escaped or raw) as not
  valid JSON, so such a message is dead-lettered as "not valid JSON".
- Amounts: a number in [``MIN_AMOUNT``, ``MAX_AMOUNT``]. A payment has a smallest unit;
  0.01 is a cent (and the smallest amount of every currency the simulator uses), so
  1e-300 is a unit error, not a payment. Sub-0.01 amounts of three-decimal currencies
  (0.005 KWD) are rejected too: lower ``MIN_AMOUNT`` if those are in scope.
- Codes (currency, country): ASCII upper-case letters, exactly 2 or 3 of them.
- Event times: ISO-8601 with a timezone, in [2000, 2100) once converted to UTC (any
  offset, however extreme, is an out-of-range reason, never an error of the parser).
- Unknown fields are rejected, not dropped: versions are explicit (an event newer than
  the consumer knows is already rejected), so a field the contract does not name is a
  producer bug or a change that needs a new contract version, and silently dropping it
  hid both (and let 2 MB of padding through).
- Size: a valid event of more than ``max_event_bytes`` (64 KiB; 1 MiB for predictions,
  whose feature vector grows with the model) is rejected. The fields are checked first,
  so an oversize event with a bad field is dead-lettered for the field.
- The message key: a non-empty key must be the UTF-8 of the event's ``key_field``
  (``user_id`` for transactions): it picks the partition that keeps one user's events in
  order, so a different key is a producer bug and is dead-lettered. A null (or empty) key
  is accepted: Kafka's console producer and many simple clients send none, and the event
  is still whole; only the per-key ordering in Kafka is lost (features order by event
  time anyway).
- Duplicate JSON keys: the last one wins (orjson's behaviour, which RFC 8259 allows);
  finding duplicates would need a second parse of every event on the hot path. The
  online API is stricter here (a 422): its caller is there to resend; a topic's producer
  is not.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from datetime import datetime, timezone
from typing import Any, Callable

import orjson
import pyarrow as pa

from skewless.errors import ConfigError

# -- Rules shared with the online API (serving/schemas.py): one definition for both. ----
# Event times outside this range are "absurd" and dead-lettered.
MIN_EVENT_TIME = datetime(2000, 1, 1, tzinfo=timezone.utc)
MAX_EVENT_TIME = datetime(2100, 1, 1, tzinfo=timezone.utc)
MIN_AMOUNT = 0.01  # a payment's smallest unit (a cent); inclusive
MAX_AMOUNT = 1_000_000.0  # inclusive
MAX_TEXT_LENGTH = 256  # characters of any text field (ids, channel, mcc, ...)
# ``text_problem`` as a regular expression, for JSON Schema and pydantic's ``pattern``
# (Rust/ECMAScript-u syntax; Python's ``re`` has no \p{..}): a character that is neither
# "Other" (control, format, surrogate, private use, unassigned) nor a separator, then any
# run of ASCII spaces each followed by another such character. Length is checked apart.
TEXT_PATTERN = r"^[^\p{C}\p{Z}]( *[^\p{C}\p{Z}])*$"
CODE_PATTERNS = {2: r"^[A-Z]{2}$", 3: r"^[A-Z]{3}$"}  # currency (3) and country (2) codes
MAX_EVENT_BYTES = 64 * 1024  # a message's value, for the transactions and labels topics
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1  # integer fields are int32 columns

TIMESTAMP = pa.timestamp("us", tz="UTC")

# Columns every lake row carries in addition to the contract's own.
KAFKA_COLUMNS = [
    pa.field("_kafka_partition", pa.int32(), nullable=False),
    pa.field("_kafka_offset", pa.int64(), nullable=False),
    pa.field("_ingested_at", TIMESTAMP, nullable=False),
]


class InvalidEvent(ValueError):
    """An event that breaks its contract; ``str()`` says why.

    ``check`` names the rule that failed (``in_range``, ``type``, ``json``, ...) and
    ``field`` the field it failed on (None for the whole message): ``check_name`` joins
    them with the contract's name, e.g. ``transactions.amount.in_range``, the name a dead
    letter's reason starts with (``skewless.event_checks`` lists every check by name).
    """

    def __init__(self, message: str, check: str = "contract", field: str | None = None):
        super().__init__(message)
        self.check = check
        self.field = field

    def check_name(self, contract: str) -> str:
        return ".".join(p for p in (contract, self.field, self.check) if p)


def _parse_time(value: Any, name: str) -> datetime:
    if not isinstance(value, str):
        raise InvalidEvent(f"field '{name}' must be an ISO-8601 string, got {type(value).__name__}", "type", name)
    try:
        ts = datetime.fromisoformat(value)  # Python 3.11+ accepts a trailing "Z"
    except ValueError:
        raise InvalidEvent(f"field '{name}' is not an ISO-8601 timestamp: {value[:40]!r}", "iso8601", name) from None
    if ts.tzinfo is None:
        raise InvalidEvent(f"field '{name}' has no timezone; event times must be UTC-aware", "timezone", name)
    # Compare before converting: aware comparison is exact for any offset, whereas
    # converting 9999-12-31T23:59:59-23:59 to UTC overflows the datetime range.
    if not (MIN_EVENT_TIME <= ts < MAX_EVENT_TIME):
        raise InvalidEvent(f"field '{name}' is out of range: {value[:60]}", "in_range", name)  # (any digits of a fraction parse)
    if ts.utcoffset():
        ts = ts.astimezone(timezone.utc)
    return ts


def text_problem(value: str) -> str | None:
    """Why ``value`` is not valid text for a contract's text field, or None if it is.

    The rule of every text field (see the module docstring); ``TEXT_PATTERN`` and
    ``MAX_TEXT_LENGTH`` state the same rule for a JSON Schema.
    """
    if not 0 < len(value) <= MAX_TEXT_LENGTH:
        return f"must be a non-empty string of at most {MAX_TEXT_LENGTH} characters"
    if not value.isprintable():
        return "must be printable text (no control, format or invisible characters)"
    if value[0] == " " or value[-1] == " ":
        return "must not be blank or start or end with a space"
    return None


def _type_error(name: str, expected: str, value: Any) -> InvalidEvent:
    return InvalidEvent(f"field '{name}' must be {expected}, got {type(value).__name__}", "type", name)


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
        problem = text_problem(value)
        if problem is not None:
            raise InvalidEvent(f"field '{name}' {problem}: {value[:40]!r}", "text", name)
        return value
    if kind is TIME:
        return _parse_time(value, name)
    if kind is AMOUNT:
        if t is not float and t is not int:
            raise _type_error(name, "a number", value)
        if not (MIN_AMOUNT <= value <= MAX_AMOUNT):  # also false for NaN; exact for any int
            raise InvalidEvent(f"field '{name}' is out of range [{MIN_AMOUNT:g}, {MAX_AMOUNT:g}]: {value!r}"[:120],
                               "in_range", name)
        return float(value)
    if kind in _CODE_LEN:
        n = _CODE_LEN[kind]
        if t is not str:
            raise _type_error(name, "a string", value)
        if len(value) != n or not value.isascii() or not value.isalpha() or not value.isupper():
            raise InvalidEvent(f"field '{name}' must be a {n}-letter upper-case code: {value[:20]!r}", "code", name)
        return value
    if kind is BOOL:
        if t is not bool:
            raise _type_error(name, "a boolean", value)
        return value
    if kind is INT:
        if t is not int:
            raise _type_error(name, "an integer", value)
        if not INT32_MIN <= value <= INT32_MAX:
            raise InvalidEvent(f"field '{name}' is out of range for a 32-bit integer: {value}", "in_range", name)
        return value
    if kind is PROB:
        if (t is not float and t is not int) or not 0.0 <= value <= 1.0:
            raise InvalidEvent(f"field '{name}' must be a number in [0, 1], got {value!r}"[:120], "in_range", name)
        return float(value)
    if kind is NUMBERS:
        if t is not dict or not all(type(k) is str and (v is None or type(v) in (int, float)) for k, v in value.items()):
            raise InvalidEvent(f"field '{name}' must be an object of name -> number or null", "type", name)
        try:
            return orjson.dumps(value).decode()  # stored as JSON text: any reader parses it
        except orjson.JSONEncodeError as exc:  # an int past 64 bits, a lone surrogate in a name
            raise InvalidEvent(f"field '{name}' must be an object of name -> number or null: {exc}",
                               "type", name) from None
    raise ValueError(f"unknown field kind {kind!r}")


# -- The per-event field checks, compiled. ``validate`` runs once per event on the ingestion
# hot path; a loop over the fields with a dispatch on each field's kind cost more than the
# checks themselves. So each contract's checks are generated once as straight-line code
# (as ``dataclasses`` generates ``__init__``): per field, in the contract's order, the
# value's common valid form is accepted inline, and anything else (an error, a less common
# valid form such as an int amount or a time with a non-UTC offset) goes to ``_check``,
# the one definition of every rule, which returns the row value or raises the reason.
# The inline test of each kind accepts a subset of what ``_check`` accepts, giving the
# same value (tests/unit/test_contracts.py compares the two on every kind).
_MIN_YEAR, _MAX_YEAR = MIN_EVENT_TIME.year, MAX_EVENT_TIME.year
assert MIN_EVENT_TIME == datetime(_MIN_YEAR, 1, 1, tzinfo=timezone.utc)
assert MAX_EVENT_TIME == datetime(_MAX_YEAR, 1, 1, tzinfo=timezone.utc)

_INLINE = {
    # printable text without spaces passes ``text_problem`` (text with a space: ``_check``)
    STR: "type(v) is str and 0 < len(v) <= MAX_TEXT_LENGTH and v.isprintable() and ' ' not in v",
    AMOUNT: "type(v) is float and MIN_AMOUNT <= v <= MAX_AMOUNT",
    CODE2: "type(v) is str and len(v) == 2 and v.isascii() and v.isalpha() and v.isupper()",
    CODE3: "type(v) is str and len(v) == 3 and v.isascii() and v.isalpha() and v.isupper()",
    BOOL: "type(v) is bool",
    INT: "type(v) is int and INT32_MIN <= v <= INT32_MAX",
    PROB: "type(v) is float and 0.0 <= v <= 1.0",
}
# A time in UTC ("Z" or "+00:00": ``fromisoformat`` gives ``timezone.utc`` itself) needs no
# conversion, and its range check is one of its year.
_INLINE_TIME = """\
    elif type(v) is str:
        try:
            t = fromisoformat(v)
        except ValueError:
            t = None
        row[{name!r}] = t if t is not None and t.tzinfo is UTC and _MIN_YEAR <= t.year < _MAX_YEAR \\
            else _check({kind}, {name!r}, v)
"""


def _compile_fields(contract: str, fields: tuple[Field, ...]) -> Callable[[Callable[[str], Any]], dict[str, Any]]:
    """``fields(event.get) -> row``: every field's check in order, raising ``InvalidEvent``
    for the first problem (unknown fields are ``validate``'s to find)."""
    lines = ["def fields(get):", "    row = {}"]
    kinds = {f"kind_{i}": f.kind for i, f in enumerate(fields)}  # ``_check`` compares kinds by identity
    for i, f in enumerate(fields):
        lines.append(f"    v = get({f.name!r})")
        if f.required:
            lines.append("    if v is None:")
            lines.append(f"        raise InvalidEvent(\"missing required field '{f.name}'\", 'required', {f.name!r})")
        else:
            lines.append("    if v is None:")
            lines.append("        pass")
        if f.kind is TIME:
            lines.append(_INLINE_TIME.format(name=f.name, kind=f"kind_{i}").rstrip("\n"))
        elif f.kind in _INLINE:
            lines.append(f"    elif {_INLINE[f.kind]}:")
            lines.append(f"        row[{f.name!r}] = v")
        lines.append("    else:")
        lines.append(f"        row[{f.name!r}] = _check(kind_{i}, {f.name!r}, v)")
    lines.append("    return row")
    namespace: dict[str, Any] = {
        **kinds, "InvalidEvent": InvalidEvent, "_check": _check, "fromisoformat": datetime.fromisoformat,
        "UTC": timezone.utc, "_MIN_YEAR": _MIN_YEAR, "_MAX_YEAR": _MAX_YEAR, "MAX_TEXT_LENGTH": MAX_TEXT_LENGTH,
        "MIN_AMOUNT": MIN_AMOUNT, "MAX_AMOUNT": MAX_AMOUNT, "INT32_MIN": INT32_MIN, "INT32_MAX": INT32_MAX,
    }
    exec(compile("\n".join(lines), f"<contract {contract}: field checks>", "exec"), namespace)  # noqa: S102
    return namespace["fields"]


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
    max_event_bytes: int = MAX_EVENT_BYTES  # of a message's value

    @cached_property
    def _names(self) -> frozenset[str]:
        return frozenset(f.name for f in self.fields)

    @cached_property
    def _fields(self) -> Callable[[Callable[[str], Any]], dict[str, Any]]:
        """The field checks of ``validate``, compiled for this contract (see ``_compile_fields``)."""
        return _compile_fields(self.name, self.fields)

    def arrow_schema(self, present: set[str] | None = None) -> pa.Schema:
        """Schema of lake files; optional fields appear only if ``present`` has them."""
        cols = [
            pa.field(f.name, f.arrow_type, nullable=not f.required)
            for f in self.fields
            if f.required or present is None or f.name in present
        ]
        return pa.schema(cols + KAFKA_COLUMNS)

    def parse_message(self, key: bytes | None, value: bytes | None) -> dict[str, Any]:
        """Return the row for one Kafka message, or raise ``InvalidEvent`` with the reason."""
        if not value:
            raise InvalidEvent("empty message (no value)", "not_empty")
        try:
            event = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise InvalidEvent(f"not valid JSON: {exc}", "json") from None
        row = self.validate(event)
        if len(value) > self.max_event_bytes:
            raise InvalidEvent(f"event is {len(value):,} bytes, over the {self.name} contract's limit of "
                               f"{self.max_event_bytes:,}", "max_bytes")
        if key and key != row[self.key_field].encode():
            raise InvalidEvent(
                f"message key {key[:60].decode(errors='replace')!r} is not the event's {self.key_field} "
                f"{row[self.key_field][:60]!r} ({self.name} are keyed by {self.key_field}, which picks the "
                "partition that keeps its events in order; send that key, or none)", "key_matches")
        return row

    def validate(self, event: Any) -> dict[str, Any]:
        """Return the row for a decoded event, or raise ``InvalidEvent`` with the reason."""
        if not isinstance(event, dict):
            raise InvalidEvent(f"expected a JSON object, got {type(event).__name__}", "json_object")
        version = event.get("schema_version", 1)
        if type(version) is not int or version < 1:
            raise InvalidEvent(f"field 'schema_version' must be a positive integer: {version!r}"[:120], "type",
                               "schema_version")
        if version > self.version:
            raise InvalidEvent(
                f"schema_version {version} is newer than this consumer knows ({self.version})"[:120],
                "known_version", "schema_version")
        row = self._fields(event.get)
        if len(row) != len(event):  # a null optional field, or one the contract does not name
            self._reject_unknown(event)
        return row

    def _reject_unknown(self, event: dict) -> None:
        unknown = [k for k in event if k not in self._names]
        if unknown:
            more = f" (+{len(unknown) - 3} more)" if len(unknown) > 3 else ""
            raise InvalidEvent(
                f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(repr(k[:40]) for k in unknown[:3])}{more}: "
                f"not in the {self.name} contract v{self.version} (a new field needs a new contract version)",
                "known_fields")


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
    max_event_bytes=1024 * 1024,  # the feature vector grows with the model
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
    raise ConfigError(f"no event contract is configured for topic '{topic}'",
                      f"the topics with one are {', '.join(sorted(topics_by_contract.values()))} (settings: topics)")
