"""Real local services for development and tests: Apache Kafka (KRaft) and Redis.

``up`` is idempotent and waits until each service answers; ``down`` stops what ``up``
started; ``status`` reports both. Data lives under ``<state_dir>/services/``.
"""

from __future__ import annotations

from typing import Any

from skewless.services import kafka, redis_server
from skewless.settings import Settings


def up(settings: Settings) -> dict[str, Any]:
    return {"kafka": kafka.up(settings), "redis": redis_server.up(settings)}


def down(settings: Settings) -> dict[str, Any]:
    return {"kafka": kafka.down(settings), "redis": redis_server.down(settings)}


def status(settings: Settings) -> dict[str, Any]:
    return {"kafka": kafka.status(settings), "redis": redis_server.status(settings)}
