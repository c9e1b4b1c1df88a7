"""An HTTP server as a child process (``skewless serve``, ``feast serve``): started in its
own process group (uvicorn and gunicorn fork workers), waited for until a route answers
200, and stopped with all its workers. Used by the demo, the serving benchmark and the
tests that run the real server."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from skewless.errors import ServiceError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(method: str, url: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, raw[:500]


class ServerProcess:
    """A server child process in its own process group (gunicorn and uvicorn fork workers)."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path, log: Path, port: int):
        self.name, self.port, self.log_path = name, port, log
        self.base = f"http://127.0.0.1:{port}"
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def wait_ready(self, path: str, timeout: float) -> Any:
        """Poll ``GET path`` until 200 (returns its JSON); raises ServiceError with the log
        tail if the process exits first or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServiceError(f"{self.name} exited with code {self.proc.returncode} before it was ready:\n"
                                   f"{self.log_tail()}")
            try:
                status, body = http_json("GET", self.base + path, timeout=2)
                if status == 200:
                    return body
                last = (status, body)
            except (OSError, urllib.error.URLError) as exc:
                last = exc
            time.sleep(0.25)
        raise ServiceError(f"{self.name} not ready after {timeout:.0f}s (last answer: {last}):\n{self.log_tail()}")

    def stop(self) -> None:
        stop_group(self.proc, grace_s=15, kill_wait_s=5)  # the group we created: server and its workers
        self._log.close()


def stop_group(proc: subprocess.Popen, grace_s: float, kill_wait_s: float = 10) -> None:
    """Stop the process group ``proc`` leads (started with ``start_new_session``): SIGTERM,
    SIGKILL if it has not exited after ``grace_s``, then SIGKILL whatever of the group is
    left (workers or a JVM whose parent died first)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=kill_wait_s)
        except ProcessLookupError:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
