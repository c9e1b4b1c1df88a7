"""The API's front door, as pure ASGI middleware (no per-request task or body copy):
the API key, a body-size cap, request counts and latency per route for /metrics, and
the last word on errors nothing else handled.

The body cap counts the bytes actually read, not what ``Content-Length`` claims: a
chunked upload has no length, and without this a 400 MiB one was buffered whole (the
server grew from 439 MB to 8.5 GB). Past the cap the request is a 413 and the
connection is closed, so the rest of the upload is never read.

An exception no handler turned into an answer is a 500 here, on the same connection:
Starlette's own error middleware re-raises it after answering, and uvicorn then closes
the keep-alive connection, failing the client's next (valid) request on it.
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import Mapping

from starlette.exceptions import HTTPException

from serving import metrics

log = logging.getLogger(__name__)

# Reachable without the key: liveness, and the schema (it holds no data).
OPEN_PATHS = frozenset({"/healthz", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"})
MAX_BODY_BYTES = 8 * 1024 * 1024
_CLOSE = (b"connection", b"close")


class BodyTooLarge(HTTPException):
    """Raised by the guarded ``receive`` once a body passes its cap. An HTTPException,
    so FastAPI's body reader lets it through and it is answered as a 413 (with
    ``Connection: close``: the rest of the body stays unread)."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body larger than {limit} bytes", headers={"connection": "close"})


def _length(headers: dict[bytes, bytes]) -> int:
    try:
        return int(headers.get(b"content-length", b"0") or 0)
    except ValueError:
        return 0


class Guard:
    """Pure ASGI middleware: API key, body size, per-route request metrics, last-resort 500.

    ``body_limits`` caps some paths below ``max_body`` (e.g. one transaction)."""

    def __init__(self, app, api_key: str | None, max_body: int = MAX_BODY_BYTES,
                 body_limits: Mapping[str, int] | None = None):
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.max_body = max_body
        self.body_limits = dict(body_limits or {})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = {"code": 500, "recorded": False, "started": False}
        limit = self.body_limits.get(scope["path"], self.max_body)
        read = 0

        def record() -> None:
            if not status["recorded"]:
                status["recorded"] = True
                path = getattr(scope.get("route"), "path", "unmatched")
                metrics.REQUESTS.labels(path, scope["method"], str(status["code"])).inc()
                metrics.LATENCY.labels(path, scope["method"]).observe(time.perf_counter() - t0)

        async def _send(message):
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                record()  # before the client has the whole answer: /metrics right after counts it
            await send(message)

        async def _receive():
            nonlocal read
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > limit:
                    raise BodyTooLarge(limit)
            return message

        headers = dict(scope["headers"])
        try:
            if self.api_key is not None and scope["path"] not in OPEN_PATHS and not self._authorized(headers):
                return await _reply(_send, 401, b'{"detail":"missing or wrong API key"}',
                                    [(b"www-authenticate", b"Bearer")])
            if _length(headers) > limit:
                return await _reply(_send, 413, b'{"detail":"request body larger than %d bytes"}' % limit, [_CLOSE])
            await self.app(scope, _receive, _send)
        except BodyTooLarge:
            if status["started"]:
                raise
            await _reply(_send, 413, b'{"detail":"request body larger than %d bytes"}' % limit, [_CLOSE])
        except Exception:
            if status["started"]:
                raise  # half an answer is out: only closing the connection can end it
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            await _reply(_send, 500, b'{"detail":"internal error"}')
        finally:
            record()  # a response that never finished (the client left, an error)

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        given = headers.get(b"x-api-key")
        if given is None:
            auth = headers.get(b"authorization", b"")
            given = auth[7:] if auth[:7].lower() == b"bearer " else None
        return given is not None and hmac.compare_digest(given, self.api_key)


async def _reply(send, status: int, body: bytes, headers: list | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})
