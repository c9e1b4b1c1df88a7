"""Whether the online store holds what was loaded into it: the watermark ``materialize``
(and the stream) writes into Redis (``skewless.features.watermark``).

A missing watermark means the store is empty or its data was lost (a Redis restart
without persistence, a flush): every prediction would be scored on defaults, all views
``not_found``. ``/readyz`` then answers 503 naming the command that reloads it. The check
is one ``HGETALL``, run by ``/readyz`` and on the service's timer, never per request; it
sets ``skewless_online_store_loaded`` and ``skewless_online_store_watermark_age_seconds``.
"""

from __future__ import annotations

import math
import time
from typing import Any

from serving import metrics
from skewless.features import watermark

FIX = "skewless features materialize"


class StoreWatermark:
    def __init__(self, project: str, views: list[str]):
        self.key = watermark.redis_key(project)
        self.views = sorted(views)

    async def check(self, redis: Any) -> str | None:
        """The readiness problem, or None. An unreachable store is reported as such and
        leaves the metrics at their last known values."""
        try:
            marks = watermark.decode(await redis.hgetall(self.key))
        except Exception as exc:  # noqa: BLE001 - any Redis/network failure or timeout
            return f"online store unavailable: {type(exc).__name__}"
        now = time.time()
        for view in self.views:
            mark = marks.get(view)
            metrics.WATERMARK_AGE.labels(view).set(now - mark.until.timestamp() if mark else math.inf)
        missing = [v for v in self.views if v not in marks]
        metrics.STORE_LOADED.set(0 if missing else 1)
        if not missing:
            return None
        which = "no watermark" if len(missing) == len(self.views) else f"no watermark for {', '.join(missing)}"
        return (f"online store has {which}: it is empty or its data was lost (e.g. Redis restarted without "
                f"persistence), so every entity would be not_found; load it with: {FIX}")
