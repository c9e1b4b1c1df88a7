"""What the routes share: ``Service`` (settings, Feast registry, Redis, the champion, the
prediction log), and the errors of the read path, each carrying its HTTP status for the
app's one error handler (``serving.app``)."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from serving import metrics
from serving.champion import ChampionWatcher
from serving.drift_figures import DriftFigures
from serving.online_reader import FeaturePlan, FeatureRows
from serving.prediction_log import PredictionLog
from serving.store_watermark import StoreWatermark
from serving.stream_freshness import StreamFreshness
from skewless.errors import ServiceError, SkewlessError
from skewless.settings import Settings


def json_response(body: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    """orjson straight to bytes (NaN becomes null); routes that return this skip re-validation."""
    return Response(orjson.dumps(body), status_code=status_code, headers=headers, media_type="application/json")


class OnlineStoreDown(ServiceError):
    """The online store did not answer within ``serving.redis_timeout_s``: a 503, retry soon."""

    http_status = 503
    retry_after_s = 1


class RegistryUnavailable(ServiceError):
    """Feast's registry could not be read (not a request's fault): a 503."""

    http_status = 503


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

    def __init__(self, settings: Settings, store: Any, watcher: ChampionWatcher, prediction_log: PredictionLog | None,
                 loaded: StoreWatermark, stream: StreamFreshness, drift: DriftFigures | None = None):
        self.settings = settings
        self.store = store
        self.watcher = watcher
        self.log = prediction_log
        self.loaded = loaded  # whether the online store holds what materialize wrote
        self.stream = stream  # how fresh the streaming job keeps it (/metrics)
        self.drift = drift  # the latest drift check's figures (/metrics)
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
        """The read plan of a FeatureService or feature list, cached. An unknown service,
        view or feature is the request's fault (``PlanError``, 422); any other failure to
        read the registry is not (``RegistryUnavailable``, 503)."""
        key = (service, tuple(refs or ()))
        plan = self.plans.get(key)
        if plan is None:
            try:
                plan = FeaturePlan.for_service(self.store, service) if service else FeaturePlan.for_refs(self.store, refs)
            except SkewlessError:
                raise
            except Exception as exc:  # noqa: BLE001 - the registry's own failure, whatever its type
                raise RegistryUnavailable(f"feature registry unavailable: {type(exc).__name__}: {exc}"[:300]) from exc
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


async def service(request: Request) -> Service:
    """The app's Service (a FastAPI dependency; async, so FastAPI calls it inline rather
    than on its thread pool)."""
    return request.app.state.service
