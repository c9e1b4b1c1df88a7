"""Settings for tests: a private copy of the session's settings (its own lake, state dir,
topics and consumer group), and section-wise overrides of any settings."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from skewless.settings import Settings


def with_overrides(settings: Settings, **overrides: Any) -> Settings:
    """``settings`` with top-level values replaced and sections (dicts) merged key by key."""
    data = settings.model_dump()
    for key, value in overrides.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and isinstance(data.get(key), dict) else value
    return Settings.model_validate(data)


def isolated_settings(base: Settings, tmp: Path, **overrides: Any) -> Settings:
    """``base`` with a lake, state dir, topics and consumer group no other test shares."""
    tag = uuid.uuid4().hex[:10]
    private = with_overrides(
        base, lake_path=str(tmp / "lake"), state_dir=str(tmp / "state"),
        topics={"transactions": f"tx-{tag}", "labels": f"lb-{tag}", "predictions": f"pr-{tag}"},
        kafka={"consumer_group": f"g-{tag}"},
        services={"jar_cache_dir": str(base.services.jar_cache_dir)},
    )
    return with_overrides(private, **overrides)
