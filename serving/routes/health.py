"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from serving import metrics
from serving.request_body import StrictJSONRoute
from serving.service import Service, json_response, service

router = APIRouter(route_class=StrictJSONRoute)


@router.get("/healthz", summary="alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="model loaded, online store reachable and loaded (its watermark is there)",
            responses={503: {"description": "not ready; `problems` says why"}})
async def readyz(svc: Service = Depends(service)):
    watcher = svc.watcher
    problems = []
    if watcher.current is None:
        problems.append(watcher.error or "no model loaded yet")
    down = await svc.ping() or await svc.loaded.check(svc.redis)
    if down:
        problems.append(down)
    body: dict[str, Any] = {"ready": not problems, "problems": problems}
    champ = watcher.current
    if champ:
        a = champ.artifact
        body["model"] = {"name": a.model_name, "version": a.version, "feature_service": a.feature_service,
                         "scorer": champ.scorer.description}
    return json_response(body, status_code=503 if problems else 200)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics_route(svc: Service = Depends(service)):
    await svc.stream.check(svc.redis)  # the stream's freshness as of this scrape; a Redis error is a gauge
    if svc.drift is not None:
        svc.drift.check()  # the latest drift check's figures (a stat when its file is unchanged)
    data, content_type = metrics.render()
    return Response(data, media_type=content_type)
