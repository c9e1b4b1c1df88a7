"""Which part of the offline tables changed since the online store was last loaded.

The ETL marks the earliest time it rewrote (``mark``); materialization reloads from
there (``since``) and then clears the mark (``clear``). This is how a late event, which
changes offline rows *older* than the last materialization, still reaches the online
store: an incremental materialization alone only looks at rows newer than its last end.
The mark is a small JSON file in the state dir; stages share it without importing each
other.
"""

from __future__ import annotations

import json
import os
from datetime import datetime

from skewless.lake_layout import LakeLayout
from skewless.settings import Settings


def _path(settings: Settings):
    return LakeLayout.of(settings).recomputed_path


def since(settings: Settings) -> datetime | None:
    """The earliest offline row time rewritten since the last materialization, if any."""
    p = _path(settings)
    if not p.exists():
        return None
    return datetime.fromisoformat(json.loads(p.read_text())["since"])


def mark(settings: Settings, start: datetime) -> None:
    """Record that offline rows at or after ``start`` were (re)written."""
    current = since(settings)
    if current is not None and current <= start:
        return
    _path(settings).parent.mkdir(parents=True, exist_ok=True)
    tmp = _path(settings).with_suffix(".tmp")
    tmp.write_text(json.dumps({"since": start.isoformat()}))
    os.replace(tmp, _path(settings))


def clear(settings: Settings, seen: datetime | None) -> None:
    """Forget the mark a materialization has just covered (unless a newer run moved it)."""
    if since(settings) == seen:
        _path(settings).unlink(missing_ok=True)
