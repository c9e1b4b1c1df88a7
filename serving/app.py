"""The online API: features and fraud predictions for the champion model's FeatureService.

Routes: ``POST /v1/predict``, ``POST /v1/features``, ``GET /healthz``, ``GET /readyz``,
``GET /metrics``; the OpenAPI schema at ``/docs``. ``create_app(settings)`` builds it;
``skewless serve`` runs it under uvicorn.

Failure modes: a bad request is a 422 naming the field (a body that is not strict JSON:
NaN, Infinity, 1e400, a lone surrogate, a repeated key, is one too, see
``serving.request_body``; the answer is bounded whatever the request); a body over its cap
(counted as read, chunked or not; one transaction is at most what its topic takes) or a
batch over ``serving.max_entities`` is a 413; an unexpected error is a 500 that keeps the
connection (``serving.guard``); an unreachable online store is a 503 within
``serving.redis_timeout_s`` (the Redis client reconnects by itself on the next request);
no champion yet is a 503 on /v1/predict; an empty or lost online store (no watermark, see
``serving.store_watermark``) makes /readyz a 503. Prediction logging never delays an answer.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import time
import uuid
from collections import OrderedDict
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

from serving import metrics
from serving.champion import ChampionWatcher
from serving.guard import Guard
from serving.request_body import StrictJSONRoute, validation_error_body
from serving.online_reader import FeaturePlan, FeatureRows, PlanError
from serving.prediction_log import PredictionLog
from serving.schemas import FeaturesRequest, FeaturesResponse, Prediction, Transaction
from serving.store_watermark import StoreWatermark
from skewless.contracts import TRANSACTIONS, text_problem
from skewless.settings import Settings

log = logging.getLogger(__name__)


def _json(body: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    """orjson straight to bytes (NaN becomes null); routes that return this skip re-validation."""
    return Response(orjson.dumps(body), status_code=status_code, headers=headers, media_type="application/json")


class OnlineStoreDown(Exception):
    pass


def redis_client(settings: Settings):
    """An asyncio Redis client whose every call is bounded by ``serving.redis_timeout_s``."""
    import redis.asyncio as aioredis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    timeout = settings.serving.redis_timeout_s
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    # One immediate retry: after a Redis restart the first use of a pooled connection fails.
    return aioredis.Redis.from_url(settings.redis_url, password=password, socket_timeout=timeout,
                                   socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 1),
                                   health_check_interval=0)


class Service:
    """What the routes share: settings, Feast registry, Redis, the champion, the log."""

    def __init__(self, settings: Settings, store: Any, watcher: ChampionWatcher, prediction_log: PredictionLog | None):
        self.settings = settings
        self.store = store
        self.watcher = watcher
        self.log = prediction_log
        self._redis: Any = None
        self._threads: Any = None
        self._loop: Any = None
        self.plans: OrderedDict[tuple, FeaturePlan] = OrderedDict()

    def one_thread(self):
        """Score one row on one thread. scikit-learn's OpenMP pool spin-waits for cores;
        on a busy 2-core machine that made a 1.5 ms prediction take 14 ms at p50 and 1 s
        at p99."""
        if self._threads is None:
            from threadpoolctl import ThreadpoolController

            self._threads = ThreadpoolController()  # after the model loaded its OpenMP runtime
        return self._threads.limit(limits=1)

    @property
    def redis(self):
        """The asyncio Redis client of the running event loop (a client is bound to one loop)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._redis, self._loop = redis_client(self.settings), loop
        return self._redis

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    def plan(self, service: str | None, refs: list[str] | None) -> FeaturePlan:
        key = (service, tuple(refs or ()))
        plan = self.plans.get(key)
        if plan is None:
            try:
                plan = FeaturePlan.for_service(self.store, service) if service else FeaturePlan.for_refs(self.store, refs)
            except PlanError:
                raise
            except Exception as exc:  # noqa: BLE001 - Feast's "not found" errors
                raise PlanError(f"unknown feature service {service!r}" if service else str(exc)) from exc
            self.plans[key] = plan
            if len(self.plans) > 256:
                self.plans.popitem(last=False)
        return plan

    async def read(self, plan: FeaturePlan, rows: list[dict[str, Any]]) -> FeatureRows:
        commands = plan.commands(rows)
        t0 = time.perf_counter()
        try:
            # Bounded by the client's socket timeouts (serving.redis_timeout_s per wait on
            # Redis), not by wall time: a request waiting for the busy event loop is not
            # waiting for Redis.
            pipe = self.redis.pipeline(transaction=False)
            for key, fields in commands:
                pipe.hmget(key, fields)
            replies = await pipe.execute()
        except Exception as exc:  # noqa: BLE001 - any Redis/network failure or timeout
            metrics.ONLINE_ERRORS.inc()
            raise OnlineStoreDown(f"online store unavailable: {type(exc).__name__}: {exc}"[:300]) from exc
        metrics.ONLINE_LATENCY.observe(time.perf_counter() - t0)
        result = plan.decode(rows, replies)
        now = time.time()
        for views in result.view_timestamps:
            for view, ts in views.items():
                metrics.STALENESS.labels(view).observe(max(0.0, now - ts))
        return result

    async def ping(self) -> str | None:
        try:
            await self.redis.ping()
            return None
        except Exception as exc:  # noqa: BLE001
            return f"online store unavailable: {type(exc).__name__}"


def create_app(settings: Settings, store: Any = None, watcher: ChampionWatcher | None = None,
               prediction_log: PredictionLog | None = None, freeze_heap: bool = False) -> FastAPI:
    """The API. ``freeze_heap`` (the server does it; an embedding process may not want
    it) moves everything loaded at start-up and at each reload out of the collector's
    sight: the ~430k objects of Feast, MLflow, scikit-learn and the model made every full
    collection ~175 ms, the whole p99 at 8 connections; frozen, ~1 ms."""
    from skewless.features.store import feature_store

    store = store if store is not None else feature_store(settings)
    watcher = watcher or ChampionWatcher(settings, store)
    if prediction_log is None and settings.serving.log_predictions:
        prediction_log = PredictionLog(settings)
    svc = Service(settings, store, watcher, prediction_log)
    loaded = StoreWatermark(store.project, [fv.name for fv in store.list_feature_views()])

    def _publish_model() -> None:
        if watcher.current:
            metrics.show_model(watcher.current.artifact.model_name, watcher.current.artifact.version)
        if freeze_heap:
            gc.collect()
            gc.freeze()

    async def _watch() -> None:
        while True:
            await asyncio.sleep(settings.serving.reload_interval_s)
            if await asyncio.to_thread(watcher.refresh):
                metrics.MODEL_RELOADS.inc()
                _publish_model()
            await loaded.check(svc.redis)  # keeps the online-store metrics current

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if watcher.current is None:
            await asyncio.to_thread(watcher.refresh)
        _publish_model()
        await loaded.check(svc.redis)
        task = asyncio.create_task(_watch())
        yield
        task.cancel()
        await svc.close()
        if prediction_log is not None:
            await asyncio.to_thread(prediction_log.close)

    app = FastAPI(title="Skewless online API", version="1", lifespan=lifespan,
                  description="Online features and fraud predictions from the champion model's FeatureService.")
    app.router.route_class = StrictJSONRoute  # bodies parsed as strict JSON (no NaN, no lone surrogates)
    app.state.service = svc
    api_key = settings.serving.api_key.get_secret_value() if settings.serving.api_key else None

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return Response(validation_error_body(exc.errors()), status_code=422, media_type="application/json")

    @app.exception_handler(OnlineStoreDown)
    async def _down(request: Request, exc: OnlineStoreDown):
        return _json({"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(PlanError)
    async def _bad_plan(request: Request, exc: PlanError):
        return _json({"detail": str(exc)}, status_code=422)

    @app.get("/healthz", summary="alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="model loaded, online store reachable and loaded (its watermark is there)",
             responses={503: {"description": "not ready; `problems` says why"}})
    async def readyz():
        problems = []
        if watcher.current is None:
            problems.append(watcher.error or "no model loaded yet")
        down = await svc.ping() or await loaded.check(svc.redis)
        if down:
            problems.append(down)
        body: dict[str, Any] = {"ready": not problems, "problems": problems}
        if watcher.current:
            a = watcher.current.artifact
            body["model"] = {"name": a.model_name, "version": a.version, "feature_service": a.feature_service}
        return _json(body, status_code=503 if problems else 200)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics_route():
        data, content_type = metrics.render()
        return Response(data, media_type=content_type)

    @app.post("/v1/features", response_model=FeaturesResponse, summary="online feature values for many entities",
              responses={413: {"description": "too many entities"}, 422: {"description": "bad request"},
                         503: {"description": "online store unavailable"}})
    async def features(body: FeaturesRequest):
        if len(body.entities) > settings.serving.max_entities:
            raise HTTPException(413, f"entities: {len(body.entities)} rows, at most "
                                     f"{settings.serving.max_entities} per request (serving.max_entities)")
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
        return _json({"feature_service": body.feature_service, "features": plan.names, "results": rows})

    @app.post("/v1/predict", response_model=Prediction, summary="score one transaction",
              responses={422: {"description": "bad transaction; the message names the field"},
                         503: {"description": "no champion model, or online store unavailable"}})
    async def predict(tx: Transaction, request: Request,
                      include_features: bool = Query(False, description="return the vector scored")):
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        problem = text_problem(request_id)  # the id is logged to the predictions topic, as text
        if problem:
            raise HTTPException(422, f"header x-request-id {problem}")
        champ = watcher.current
        if champ is None:
            raise HTTPException(503, watcher.error or "no champion model is loaded yet")
        event = tx.model_dump()
        row = {**event, "event_epoch": event["event_time"].timestamp()}
        result = await svc.read(champ.plan, [row])
        values = result.row_dict(0)
        for name in champ.request_inputs:
            values[name] = row[name]
        art = champ.artifact
        vector = [values[f] for f in art.features]
        x = np.array([[math.nan if v is None else float(v) for v in vector]], dtype="float64")
        with svc.one_thread():
            score = float(art.pipeline.predict_proba(x)[0, 1])
        review = score >= art.threshold
        metrics.PREDICTIONS.labels("review" if review else "approve").inc()
        not_found = sorted({v.name for v in champ.plan.views} - set(result.view_timestamps[0]))
        for view in not_found:
            metrics.NOT_FOUND.labels(view).inc()
        features_used = dict(zip(art.features, (None if math.isnan(v) else v for v in x[0].tolist())))
        if svc.log is not None:
            svc.log.submit({
                "request_id": request_id, "transaction_id": tx.transaction_id, "user_id": tx.user_id,
                "merchant_id": tx.merchant_id, "amount": tx.amount, "event_time": tx.event_time.isoformat(),
                "predicted_at": datetime.now(timezone.utc).isoformat(), "model_name": art.model_name,
                "model_version": art.version, "feature_service": art.feature_service, "score": score,
                "review": review, "features": features_used})
        return _json({
            "request_id": request_id, "transaction_id": tx.transaction_id, "score": score, "review": review,
            "threshold": art.threshold, "model_name": art.model_name, "model_version": art.version,
            "feature_service": art.feature_service, "not_found": not_found,
            "features": features_used if include_features else None})

    # One transaction is at most what its topic takes (a larger message is dead-lettered).
    app.add_middleware(Guard, api_key=api_key, body_limits={"/v1/predict": TRANSACTIONS.max_event_bytes})
    return app


def app_from_env() -> FastAPI:
    """The uvicorn factory for ``skewless serve`` (each worker process builds its own app)."""
    import os
    from pathlib import Path

    from skewless.settings import load_settings

    config = os.environ.get("SKEWLESS_SERVE_CONFIG")
    return create_app(load_settings(Path(config) if config else None), freeze_heap=True)

