"""Local Redis from Debian's ``redis-server`` package.

Persistent: an append-only file (AOF) under ``<state_dir>/services/redis``, fsynced every
second, which every start reloads. A killed Redis (``kill -9``, OOM) loses nothing it
acknowledged (the writes are in the OS page cache); a host crash or power loss loses at
most the last ~1 s of writes (up to 2 s when the disk stalls an fsync).
"""

from __future__ import annotations

import shutil
import subprocess
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


class PrivateRedis:
    """A throwaway ``redis-server`` of one's own on a free port (benchmarks, fault tests):
    the shared one is never written. ``persistent`` gives it the project's AOF flags
    (``PERSISTENCE``) under ``root``; otherwise it keeps nothing (no AOF, no snapshots).
    Its output goes to ``root/redis.log``. ``stop()`` (or the ``with`` block's end) ends it."""

    def __init__(self, root: Path, persistent: bool = False, start_timeout_s: float = 30) -> None:
        import redis

        from skewless.services.server_process import free_port

        binary = shutil.which("redis-server")
        if binary is None:
            raise MissingDependencyError("redis-server", "apt-get install -y redis-server")
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://{HOST}:{self.port}/0"
        flags = PERSISTENCE if persistent else ["--appendonly", "no", "--save", ""]
        self._log = open(root / "redis.log", "wb")
        self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", HOST, "--dir", str(root),
                                      "--protected-mode", "yes", *flags], stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.client = redis.Redis(host=HOST, port=self.port, socket_timeout=10)
        deadline = time.monotonic() + start_timeout_s
        while True:
            try:
                self.client.ping()
                return
            except redis.RedisError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise ServiceError(f"a private redis-server did not start on port {self.port}:\n"
                                       f"{log_tail(root / 'redis.log')}") from None
                time.sleep(0.1)

    def used_memory_mb(self) -> float:
        return round(self.client.info("memory")["used_memory"] / 2**20, 1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.client.close()
        self._log.close()

    def __enter__(self) -> "PrivateRedis":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
