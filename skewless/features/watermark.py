"""The online store's watermark: a record, kept inside the online store itself, of what it holds.

After every successful load, ``materialize`` (and the streaming job) records per feature
view the time the view is loaded up to, how many entity keys hold its rows, and when and
by whom that was written. Because the record lives in the store, it disappears with the
data (a Redis restart without persistence, a ``FLUSHALL``, a deleted SQLite file): a
missing watermark means the store is empty or lost. Serving reports that on ``/readyz``
and in its metrics; ``materialize`` reloads in full.

Redis: one hash ``skewless:online_watermark:<project>``, one field per view holding JSON.
SQLite: the table ``skewless_online_watermark`` in the online store's database file.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from skewless.settings import Settings

TABLE = "skewless_online_watermark"


@dataclass(frozen=True)
class Mark:
    """One feature view's watermark."""

    until: datetime  # the view's rows up to this time are in the store
    keys: int  # entity keys holding the view's rows when this was written (keys are never deleted)
    written_at: datetime
    writer: str  # "materialize", "stream", ...

    def to_json(self) -> str:
        return json.dumps({"until": self.until.isoformat(), "keys": self.keys,
                           "written_at": self.written_at.isoformat(), "writer": self.writer})

    @classmethod
    def from_json(cls, text: str | bytes) -> "Mark":
        d = json.loads(text)
        return cls(_utc(datetime.fromisoformat(d["until"])), int(d["keys"]),
                   _utc(datetime.fromisoformat(d["written_at"])), str(d["writer"]))


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def now() -> datetime:
    return datetime.now(timezone.utc)


def redis_key(project: str) -> str:
    return f"skewless:online_watermark:{project}"


def online_sqlite_path(settings: Settings) -> Path:
    """Where the SQLite online store (and so its watermark) lives."""
    return (settings.state_dir / "feast" / "online.db").resolve()


def decode(raw: Mapping[Any, Any]) -> dict[str, Mark]:
    """A Redis ``HGETALL`` reply -> marks by view (an unreadable entry counts as missing)."""
    marks = {}
    for view, value in raw.items():
        try:
            marks[view.decode() if isinstance(view, bytes) else view] = Mark.from_json(value)
        except (ValueError, KeyError, TypeError):
            continue
    return marks


def _redis(settings: Settings):
    import redis

    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    return redis.Redis.from_url(settings.redis_url, password=password, socket_timeout=5)


def read(settings: Settings) -> dict[str, Mark]:
    """The marks by view; empty when the store has no watermark."""
    if settings.online_store == "redis":
        with closing(_redis(settings)) as client:
            return decode(client.hgetall(redis_key(settings.feast_project)))
    path = online_sqlite_path(settings)
    if not path.exists():
        return {}
    with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as conn:
        try:
            rows = conn.execute(f"SELECT view, mark FROM {TABLE} WHERE project = ?", (settings.feast_project,))
            return decode(dict(rows.fetchall()))
        except sqlite3.OperationalError:  # no such table
            return {}


def write(settings: Settings, marks: Mapping[str, Mark]) -> None:
    """Replace the records of these views (others are left as they are)."""
    if not marks:
        return
    if settings.online_store == "redis":
        with closing(_redis(settings)) as client:
            client.hset(redis_key(settings.feast_project), mapping={v: m.to_json() for v, m in marks.items()})
        return
    with closing(_sqlite(settings)) as conn, conn:
        conn.executemany(f"INSERT OR REPLACE INTO {TABLE} (project, view, mark) VALUES (?, ?, ?)",
                         [(settings.feast_project, v, m.to_json()) for v, m in marks.items()])


def advance(settings: Settings, until: Mapping[str, datetime], writer: str) -> list[str]:
    """Move ``until`` forward on the views that have a record (for a writer that adds rows
    as they come, like the stream); returns the views moved. A missing record stays
    missing: only a full load may create one, so a lost store stays visibly lost."""
    def moved(current: dict[str, Mark]) -> dict[str, Mark]:
        at = now()
        return {v: Mark(max(current[v].until, _utc(t)), current[v].keys, at, writer)
                for v, t in until.items() if v in current}

    if settings.online_store == "redis":
        key = redis_key(settings.feast_project)

        def update(pipe) -> dict[str, Mark]:
            new = moved(decode(pipe.hgetall(key)))
            pipe.multi()
            if new:
                pipe.hset(key, mapping={v: m.to_json() for v, m in new.items()})
            return new

        with closing(_redis(settings)) as client:
            return sorted(client.transaction(update, key, value_from_callable=True))
    with closing(_sqlite(settings)) as conn, conn:
        rows = conn.execute(f"SELECT view, mark FROM {TABLE} WHERE project = ?", (settings.feast_project,))
        new = moved(decode(dict(rows.fetchall())))
        conn.executemany(f"UPDATE {TABLE} SET mark = ? WHERE project = ? AND view = ?",
                         [(m.to_json(), settings.feast_project, v) for v, m in new.items()])
    return sorted(new)


def clear(settings: Settings) -> None:
    """Forget the watermark (before a full reload: until it ends, the store is not loaded)."""
    if settings.online_store == "redis":
        with closing(_redis(settings)) as client:
            client.delete(redis_key(settings.feast_project))
        return
    if online_sqlite_path(settings).exists():
        with closing(_sqlite(settings)) as conn, conn:
            conn.execute(f"DELETE FROM {TABLE} WHERE project = ?", (settings.feast_project,))


def _sqlite(settings: Settings) -> sqlite3.Connection:
    path = online_sqlite_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30)
    conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (project TEXT, view TEXT, mark TEXT, PRIMARY KEY (project, view))")
    return conn
