"""``POST /v1/features``: online feature values of a FeatureService (or a feature list) for
many entity rows, request fields included as the caller sends them."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException

from serving.request_body import StrictJSONRoute
from serving.schemas import FeaturesRequest, FeaturesResponse
from serving.service import Service, json_response, service

router = APIRouter(route_class=StrictJSONRoute)


@router.post("/v1/features", response_model=FeaturesResponse, summary="online feature values for many entities",
             responses={413: {"description": "too many entities"}, 422: {"description": "bad request"},
                        503: {"description": "online store or feature registry unavailable"}})
async def features(body: FeaturesRequest, svc: Service = Depends(service)):
    limit = svc.settings.serving.max_entities
    if len(body.entities) > limit:
        raise HTTPException(413, f"entities: {len(body.entities)} rows, at most {limit} per request "
                                 "(serving.max_entities)")
    if (body.feature_service is None) == (body.features is None):
        raise HTTPException(422, "give exactly one of 'feature_service' or 'features'")
    if body.features is not None and not body.features:
        raise HTTPException(422, "features: give at least one 'view:feature' reference")
    plan = svc.plan(body.feature_service, body.features)
    for i, row in enumerate(body.entities):
        plan.check_row(row, i)
    result = await svc.read(plan, body.entities) if body.entities else None
    rows = [] if result is None else [
        {"values": v, "statuses": s, "event_timestamps": t}
        for v, s, t in zip(result.values, result.statuses, result.event_timestamps)]
    return json_response({"feature_service": body.feature_service, "features": plan.names, "results": rows})
