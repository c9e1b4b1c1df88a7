"""Request and response bodies of the API.

The prediction request is built from the transactions event contract
(``skewless.contracts.TRANSACTIONS``), so the API accepts exactly what the Kafka topic
does, with the same required fields and limits; a bad field is a 422 naming it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool,
                      StrictFloat, StrictInt, StrictStr, create_model)

from skewless.contracts import (AMOUNT, BOOL, CODE2, CODE3, INT, MAX_AMOUNT, MAX_EVENT_TIME, MIN_EVENT_TIME, STR,
                                TIME, TRANSACTIONS)

Status = Literal["PRESENT", "NULL_VALUE", "NOT_FOUND", "OUTSIDE_MAX_AGE"]
Text = Annotated[str, Field(min_length=1, max_length=256)]


def _iso_time(v: Any) -> Any:
    if not isinstance(v, str):
        raise ValueError("must be an ISO-8601 string with a timezone")
    return v


def _in_range(v: datetime) -> datetime:
    if not MIN_EVENT_TIME <= v < MAX_EVENT_TIME:
        raise ValueError(f"must be between {MIN_EVENT_TIME.year} and {MAX_EVENT_TIME.year}")
    return v


# As strict as the topic: "12" is not an amount, 1 is not a user id, times are ISO strings.
_TYPES: dict[str, Any] = {
    STR: Annotated[StrictStr, Field(min_length=1, max_length=256)],
    CODE2: Annotated[StrictStr, Field(pattern=r"^[A-Z]{2}$")],
    CODE3: Annotated[StrictStr, Field(pattern=r"^[A-Z]{3}$")],
    AMOUNT: Annotated[StrictFloat | StrictInt, Field(gt=0, le=MAX_AMOUNT, allow_inf_nan=False)],
    TIME: Annotated[AwareDatetime, BeforeValidator(_iso_time), AfterValidator(_in_range)],
    INT: Annotated[StrictInt, Field(ge=1)],
    BOOL: StrictBool,
}

Transaction = create_model(
    "Transaction",
    __config__=ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "transaction_id": "t-1", "user_id": "u00001", "merchant_id": "m0001", "amount": 42.5, "currency": "EUR",
        "country": "DE", "channel": "web", "device_id": "d-1", "event_time": "2026-11-27T12:00:00Z"}]}),
    __doc__=f"A card payment: the transactions event contract (v{TRANSACTIONS.version}).",
    **{f.name: ((_TYPES[f.kind], ...) if f.required else (_TYPES[f.kind] | None, None)) for f in TRANSACTIONS.fields},
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
    entities: list[dict[str, str | int | float]] = Field(
        description="one object per entity row: join keys (e.g. user_id, merchant_id), plus the request "
                    "fields on-demand features need (amount, event_epoch)")


class FeatureRow(BaseModel):
    values: list[Any]
    statuses: list[Status]
    event_timestamps: list[float | None]


class FeaturesResponse(BaseModel):
    feature_service: str | None
    features: list[str]
    results: list[FeatureRow]
