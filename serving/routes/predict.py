"""``POST /v1/predict``: score one transaction with the champion model.

The request inputs of the on-demand features (``amount``, ``event_epoch``, ...) derive
from the transaction by ``skewless.features.request_inputs.derive``, the function training
derives them with, as the FeatureService's on-demand views declare. What was decided is
logged to the predictions topic as a record of the ``PREDICTIONS`` contract."""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timezone
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Request

from serving import metrics
from serving.online_reader import FeaturePlan
from serving.request_body import StrictJSONRoute
from serving.schemas import Prediction, Transaction
from serving.service import Service, json_response, service
from skewless.contracts import PREDICTIONS, text_problem
from skewless.errors import SkewlessError
from skewless.features.request_inputs import derive

router = APIRouter(route_class=StrictJSONRoute)


@router.post("/v1/predict", response_model=Prediction, summary="score one transaction",
             responses={422: {"description": "bad transaction; the message names the field"},
                        503: {"description": "no champion model, or online store unavailable"}})
async def predict(tx: Transaction, request: Request, svc: Service = Depends(service),
                  include_features: bool = Query(False, description="return the vector scored")):
    request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
    problem = text_problem(request_id)  # the id is logged to the predictions topic, as text
    if problem:
        raise HTTPException(422, f"header x-request-id {problem}")
    champ = svc.watcher.current
    if champ is None:
        raise HTTPException(503, svc.watcher.error or "no champion model is loaded yet")
    row = request_row(tx, champ.plan)
    result = await svc.read(champ.plan, [row])
    values = result.row_dict(0)
    for name in champ.request_inputs:
        values[name] = row[name]
    art = champ.artifact
    vector = [values[f] for f in art.features]
    x = np.array([[math.nan if v is None else float(v) for v in vector]], dtype="float64")
    # The compiled scorer needs no thread limit; scikit-learn's own call (a model or an
    # input the scorer does not take) runs under one.
    score = float(champ.scorer(x, guard=svc.one_thread)[0])
    review = score >= art.threshold
    metrics.PREDICTIONS.labels("review" if review else "approve").inc()
    not_found = sorted({v.name for v in champ.plan.views} - set(result.view_timestamps[0]))
    for view in not_found:
        metrics.NOT_FOUND.labels(view).inc()
    features_used = dict(zip(art.features, (None if math.isnan(v) else v for v in x[0].tolist())))
    if svc.log is not None:
        svc.log.submit(prediction_record(row, {
            "request_id": request_id, "predicted_at": datetime.now(timezone.utc), "model_name": art.model_name,
            "model_version": art.version, "feature_service": art.feature_service, "score": score,
            "review": review, "features": features_used}))
    return json_response({
        "request_id": request_id, "transaction_id": tx.transaction_id, "score": score, "review": review,
        "threshold": art.threshold, "model_name": art.model_name, "model_version": art.version,
        "feature_service": art.feature_service, "not_found": not_found,
        "features": features_used if include_features else None})


def request_row(tx: Transaction, plan: FeaturePlan) -> dict[str, Any]:
    """The transaction as the plan reads it: its fields, and the request inputs the plan's
    on-demand views declare, derived from it as training derives them."""
    event = tx.model_dump()
    return {**event, **derive(plan.request_inputs, event)}


def prediction_record(transaction: dict[str, Any], decided: dict[str, Any]) -> dict[str, Any]:
    """The predictions event: every required field of the ``PREDICTIONS`` contract, in its
    order, from what was decided, else from the transaction (its ids, amount, time); times
    as ISO-8601 text. A field the contract gains without a value here fails loudly."""
    source = {**transaction, **decided}
    missing = [name for name in _RECORD_FIELDS if name not in source]
    if missing:
        raise SkewlessError(f"the {PREDICTIONS.name} contract needs {missing}, which /v1/predict does not provide")
    return {name: _wire(source[name]) for name in _RECORD_FIELDS}


# The fields of a predictions event, in the contract's order (``schema_version``, optional,
# is the predictions contract's own, never the transaction's).
_RECORD_FIELDS = tuple(f.name for f in PREDICTIONS.fields if f.required)


def _wire(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value
