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
``serving.store_watermark``) makes /readyz a 503; /metrics answers whatever Redis does (a
failed read of the stream's status, ``serving.stream_freshness``, is
``skewless_stream_status_readable`` 0; the latest drift check's figures, ``serving.drift_figures``,
are read from the state dir on every scrape); a feature registry that cannot be read is a 503,
never an "unknown feature service". Prediction logging never delays an answer.

Layout: this module composes the app (the ``Service`` the routes share, the lifespan
that loads and watches the champion, one handler mapping every ``SkewlessError`` to its
``http_status``); ``serving.routes`` holds one module per concern; ``serving.service``
the Service and the read path's errors.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

from serving import metrics
from serving.champion import ChampionWatcher
from serving.drift_figures import DriftFigures
from serving.guard import Guard
from serving.prediction_log import PredictionLog
from serving.request_body import StrictJSONRoute, validation_error_body
from serving.routes import features, health, predict
from serving.service import Service, json_response
from serving.store_watermark import StoreWatermark
from serving.stream_freshness import StreamFreshness
from skewless.contracts import TRANSACTIONS
from skewless.errors import SkewlessError
from skewless.lake_layout import LakeLayout
from skewless.settings import Settings

log = logging.getLogger(__name__)


async def skewless_error(request: Request, exc: SkewlessError) -> Response:
    """Every error of ours, as its ``http_status`` says: a bad request (``PlanError``) is a
    422, an unreachable online store (``OnlineStoreDown``) a 503 with ``Retry-After``, ..."""
    retry = getattr(exc, "retry_after_s", None)
    return json_response({"detail": str(exc)}, status_code=exc.http_status,
                         headers={"Retry-After": str(retry)} if retry else None)


async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
    return Response(validation_error_body(exc.errors()), status_code=422, media_type="application/json")


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
    views = [fv.name for fv in store.list_feature_views()]
    loaded = StoreWatermark(store.project, views)
    stream = StreamFreshness(store.project, views)
    drift = DriftFigures(LakeLayout.of(settings).drift_latest_path)
    svc = Service(settings, store, watcher, prediction_log, loaded, stream, drift)

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
            await stream.check(svc.redis)  # and the stream's (also read on every scrape)
            drift.check()  # and the latest drift check's (also read on every scrape)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if watcher.current is None:
            await asyncio.to_thread(watcher.refresh)
        _publish_model()
        await loaded.check(svc.redis)
        await stream.check(svc.redis)
        drift.check()
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
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(SkewlessError, skewless_error)
    for routes in (health.router, features.router, predict.router):
        app.include_router(routes)
    # One transaction is at most what its topic takes (a larger message is dead-lettered).
    api_key = settings.serving.api_key.get_secret_value() if settings.serving.api_key else None
    app.add_middleware(Guard, api_key=api_key, body_limits={"/v1/predict": TRANSACTIONS.max_event_bytes})
    return app


def app_from_env() -> FastAPI:
    """The uvicorn factory for ``skewless serve`` (each worker process builds its own app)."""
    import os
    from pathlib import Path

    from skewless.settings import load_settings

    config = os.environ.get("SKEWLESS_SERVE_CONFIG")
    return create_app(load_settings(Path(config) if config else None), freeze_heap=True)

