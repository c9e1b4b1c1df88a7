"""Local Redis from Debian's ``redis-server`` package.

Persistent: an append-only file (AOF) under ``<state_dir>/services/redis``, fsynced every
second, which every start reloads. A killed Redis (``kill -9``, OOM) loses nothing it
acknowledged (the writes are in the OS page cache); a host crash or power loss loses at
most the last ~1 s of writes (up to 2 s when the disk stalls an fsync).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from skewless.errors import MissingDependencyError, ServiceError
from skewless.services.process import log_tail, port_open, read_pid, start_detached, stop
from skewless.settings import Settings

HOST = "127.0.0.1"
# The AOF (appendonlydir/ under --dir) is loaded at start because appendonly is on; RDB
# snapshots would only duplicate it. docker-compose.yml's redis service uses the same flags.
PERSISTENCE = ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]


def _dir(settings: Settings) -> Path:
    return settings.state_dir / "services" / "redis"


def status(settings: Settings) -> dict[str, Any]:
    port = settings.services.redis_port
    pid = read_pid(_dir(settings) / "redis.pid")
    answering = port_open(HOST, port)
    return {
        "running": answering,
        "managed": pid is not None,
        "pid": pid,
        "address": f"{HOST}:{port}",
        "persistence": _persistence(port) if answering else None,
    }


def _persistence(port: int) -> str:
    """What a restart keeps, as the running Redis reports it (it may predate this setting:
    a Redis started without AOF keeps nothing; restart it with services down/up)."""
    import redis

    try:
        with redis.Redis(host=HOST, port=port, socket_timeout=0.5) as client:
            config = {k: v for name in ("appendonly", "appendfsync", "save") for k, v in client.config_get(name).items()}
    except redis.RedisError as exc:
        return f"unknown ({type(exc).__name__})"
    if config.get("appendonly") == "yes":
        return f"aof (appendfsync {config.get('appendfsync')})"
    return "rdb snapshots" if config.get("save") else "none (a restart empties it)"


def up(settings: Settings) -> dict[str, Any]:
    current = status(settings)
    if current["running"]:
        return {**current, "started": False}
    binary = shutil.which("redis-server")
    if binary is None:
        raise MissingDependencyError("redis-server", "apt-get install -y redis-server")
    d = _dir(settings)
    d.mkdir(parents=True, exist_ok=True)
    port = settings.services.redis_port
    cmd = [binary, "--port", str(port), "--bind", HOST, "--dir", str(d), "--protected-mode", "yes", *PERSISTENCE]
    start_detached(cmd, d / "redis.log", d / "redis.pid")
    deadline = time.monotonic() + settings.services.start_timeout_s
    while time.monotonic() < deadline:
        if _ping(port):
            return {**status(settings), "started": True}
        if read_pid(d / "redis.pid") is None:
            break
        time.sleep(0.1)
    raise ServiceError(f"redis-server did not start on port {port}:\n{log_tail(d / 'redis.log')}")


def _ping(port: int) -> bool:
    import redis

    try:
        return bool(redis.Redis(host=HOST, port=port, socket_timeout=0.5).ping())
    except redis.RedisError:
        return False


def down(settings: Settings) -> dict[str, Any]:
    return {"stopped": stop(_dir(settings) / "redis.pid", timeout=10)}
