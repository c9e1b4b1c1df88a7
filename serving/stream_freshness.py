"""How fresh the streamed features are: the streaming job's status (``skewless.features.
stream_status``, a hash the job writes into the online store's Redis with each micro-batch)
as Prometheus gauges.

One ``HGETALL`` on every scrape of ``/metrics`` (so the ages are computed at the scrape,
not at some earlier refresh) and on the service's timer (so every worker of a
multi-worker server holds a recent value). It sets ``skewless_feature_freshness_seconds``
per view (now - the newest event time applied), ``skewless_stream_lag_records``,
``skewless_stream_last_batch_age_seconds``, ``skewless_stream_events_applied``,
``skewless_stream_last_batch``, ``skewless_stream_ran`` and
``skewless_stream_status_readable``.

- The stream never ran (no hash, or lost with the store): ``skewless_stream_ran`` 0 and
  every other value NaN ("unknown", not 0, which would read as "perfectly fresh").
- Redis unreachable or answering with an error: ``/metrics`` still answers;
  ``skewless_stream_status_readable`` 0, and the values are those of the last status read,
  the ages recomputed against now (the stream may have moved on since: an upper bound).
"""

from __future__ import annotations

import math
import time
from typing import Any

from serving import metrics
from skewless.features import stream_status
from skewless.features.stream_status import StreamStatus

NAN = math.nan


class StreamFreshness:
    def __init__(self, project: str, views: list[str]):
        self.project = project
        self.views = sorted(views)
        self.status: StreamStatus | None = None  # the last status read
        self.read_once = False  # until a read succeeds, whether the stream ran is unknown
        self._labelled: set[str] = set()

    async def check(self, redis: Any) -> str | None:
        """Read the status and set the gauges; the problem reading it, or None."""
        problem = None
        try:
            self.status = await stream_status.aread(redis, self.project)
            self.read_once = True
        except Exception as exc:  # noqa: BLE001 - any Redis/network failure, timeout or malformed hash
            problem = f"stream status unreadable: {type(exc).__name__}"
        self.publish(time.time(), readable=problem is None)
        return problem

    def publish(self, now: float, readable: bool) -> None:
        metrics.STREAM_STATUS_READ.set(1 if readable else 0)
        s = self.status
        newest = s.newest if s is not None else {}
        for view in sorted(set(self.views) | set(newest) | self._labelled):
            t = newest.get(view)
            metrics.FRESHNESS.labels(view).set(now - t if t is not None else NAN)
        self._labelled |= set(newest) | set(self.views)
        metrics.STREAM_RAN.set(NAN if not self.read_once else 0 if s is None else 1)
        if s is None:
            for gauge in (metrics.STREAM_LAG, metrics.STREAM_BATCH_AGE, metrics.STREAM_EVENTS, metrics.STREAM_BATCH):
                gauge.set(NAN)
            return
        metrics.STREAM_LAG.set(_num(s.lag))
        metrics.STREAM_BATCH_AGE.set(NAN if s.applied_at is None else now - s.applied_at)
        metrics.STREAM_EVENTS.set(s.events)
        metrics.STREAM_BATCH.set(_num(s.batch))


def _num(v: int | None) -> float:
    return NAN if v is None else float(v)
