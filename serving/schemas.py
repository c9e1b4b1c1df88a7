"""Request and response bodies of the API.

The prediction request is built from the transactions event contract
(``skewless.contracts.TRANSACTIONS``) and the rules it exports, so the API accepts
exactly what the Kafka topic does: the same fields (an unknown one is rejected), the same
text, code, amount and time rules. Each field's bounds are stated in the OpenAPI schema
with standard JSON Schema keywords (``minimum``, ``maximum``, ``minLength``,
``maxLength``, ``pattern``), so clients and generators see them. After the fields pass,
the contract itself judges the whole transaction (``_as_the_topic``), so no rule can
drift between the two. A bad field is a 422 naming it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool,
                      StrictFloat, StrictInt, StrictStr, create_model, model_validator)

from skewless.contracts import (AMOUNT, BOOL, CODE2, CODE3, CODE_PATTERNS, INT, INT32_MAX, MAX_AMOUNT, MAX_EVENT_TIME,
                                MAX_TEXT_LENGTH, MIN_AMOUNT, MIN_EVENT_TIME, STR, TEXT_PATTERN, TIME, TRANSACTIONS,
                                InvalidEvent, text_problem)

Status = Literal["PRESENT", "NULL_VALUE", "NOT_FOUND", "OUTSIDE_MAX_AGE"]
Text = Annotated[str, Field(min_length=1, max_length=256)]


def _iso_time(v: Any) -> Any:
    """The contract's parser (``datetime.fromisoformat``), so the same strings pass."""
    if not isinstance(v, str):
        raise ValueError("must be an ISO-8601 string with a timezone")
    try:
        return datetime.fromisoformat(v)
    except ValueError:
        raise ValueError("is not an ISO-8601 timestamp") from None


def _in_range(v: datetime) -> datetime:
    # Compared as aware datetimes: exact for any offset (converting 9999-12-31T23:59:59-23:59
    # to UTC would overflow).
    if not MIN_EVENT_TIME <= v < MAX_EVENT_TIME:
        raise ValueError(f"must be between {MIN_EVENT_TIME.year} and {MAX_EVENT_TIME.year}")
    return v


def _text(v: str) -> str:
    problem = text_problem(v)
    if problem is not None:
        raise ValueError(problem)
    return v


# As strict as the topic: "12" is not an amount, 1 is not a user id, times are ISO strings.
# The text rule is ``text_problem`` (Python's own Unicode tables, as the consumer); its
# pattern is stated in the schema for clients, not matched a second time here.
_TYPES: dict[str, Any] = {
    STR: Annotated[StrictStr, Field(min_length=1, max_length=MAX_TEXT_LENGTH,
                                    json_schema_extra={"pattern": TEXT_PATTERN}), AfterValidator(_text)],
    CODE2: Annotated[StrictStr, Field(pattern=CODE_PATTERNS[2])],
    CODE3: Annotated[StrictStr, Field(pattern=CODE_PATTERNS[3])],
    # One number type (a float field in strict mode takes ints, never bools or strings):
    # a union of int and float would move the bounds out of both branches, where JSON
    # Schema has no keyword for them.
    AMOUNT: Annotated[float, Field(strict=True, ge=MIN_AMOUNT, le=MAX_AMOUNT, allow_inf_nan=False)],
    TIME: Annotated[AwareDatetime, BeforeValidator(_iso_time), AfterValidator(_in_range),
                    Field(json_schema_extra={"format": "date-time"})],
    INT: Annotated[StrictInt, Field(ge=1, le=INT32_MAX)],
    BOOL: StrictBool,
}


def _field_type(f) -> Any:
    if f.name == "schema_version":  # a version this service's contract knows
        return Annotated[StrictInt, Field(ge=1, le=TRANSACTIONS.version)]
    return _TYPES[f.kind]


class _TransactionBase(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "transaction_id": "t-1", "user_id": "u00001", "merchant_id": "m0001", "amount": 42.5, "currency": "EUR",
        "country": "DE", "channel": "web", "device_id": "d-1", "event_time": "2026-11-27T12:00:00Z"}]})

    @model_validator(mode="wrap")
    @classmethod
    def _as_the_topic(cls, data: Any, handler: Any) -> Any:
        """Fields first (their errors name them); then the topic's own verdict on the event."""
        model = handler(data)
        if isinstance(data, dict):
            try:
                TRANSACTIONS.validate(data)
            except InvalidEvent as exc:
                raise ValueError(f"the transactions topic would reject this event: {exc}") from None
        return model


Transaction = create_model(
    "Transaction",
    __base__=_TransactionBase,
    __doc__=f"A card payment: the transactions event contract (v{TRANSACTIONS.version}).",
    **{f.name: ((_field_type(f), ...) if f.required else (_field_type(f) | None, None)) for f in TRANSACTIONS.fields},
)


class Prediction(BaseModel):
    request_id: str
    transaction_id: str
    score: float = Field(description="fraud probability")
    review: bool = Field(description="score >= the model's cost-chosen threshold: send to review")
    threshold: float
    model_name: str
    model_version: str
    feature_service: str
    not_found: list[str] = Field(description="feature views with no values for this transaction's entities "
                                             "(the model sees them as missing)")
    features: dict[str, float | int | None] | None = Field(
        None, description="the exact vector scored, in model order (with ?include_features=true)")


class FeaturesRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    feature_service: Text | None = Field(None, description="a FeatureService name; or give `features`")
    features: list[Text] | None = Field(None, description="feature references 'view:feature'")
    entities: list[dict[str, StrictStr | StrictInt | StrictFloat]] = Field(
        description="one object per entity row: join keys (e.g. user_id, merchant_id: text as the event "
                    f"contract's ids, at most {MAX_TEXT_LENGTH} characters), plus the request fields "
                    f"on-demand features need: amount (a number in [{MIN_AMOUNT:g}, {MAX_AMOUNT:g}]) and "
                    f"event_epoch (the transaction's time in unix seconds, in [{MIN_EVENT_TIME.year}, "
                    f"{MAX_EVENT_TIME.year}))")


class FeatureRow(BaseModel):
    values: list[Any]
    statuses: list[Status]
    event_timestamps: list[float | None]


class FeaturesResponse(BaseModel):
    feature_service: str | None
    features: list[str]
    results: list[FeatureRow]
