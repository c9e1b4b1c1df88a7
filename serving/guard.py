"""The API's front door, as pure ASGI middleware (no per-request task or body copy):
the API key, a body-size cap, and request counts and latency per route for /metrics."""

from __future__ import annotations

import hmac
import time

from serving import metrics

# Reachable without the key: liveness, and the schema (it holds no data).
OPEN_PATHS = frozenset({"/healthz", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"})
MAX_BODY_BYTES = 8 * 1024 * 1024


def _length(headers: dict[bytes, bytes]) -> int:
    try:
        return int(headers.get(b"content-length", b"0") or 0)
    except ValueError:
        return 0


class Guard:
    """Pure ASGI middleware: API key, body size, and per-route request metrics."""

    def __init__(self, app, api_key: str | None):
        self.app = app
        self.api_key = api_key.encode() if api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = {"code": 500, "recorded": False}

        def record() -> None:
            if not status["recorded"]:
                status["recorded"] = True
                path = getattr(scope.get("route"), "path", "unmatched")
                metrics.REQUESTS.labels(path, scope["method"], str(status["code"])).inc()
                metrics.LATENCY.labels(path, scope["method"]).observe(time.perf_counter() - t0)

        async def _send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                record()  # before the client has the whole answer: /metrics right after counts it
            await send(message)

        headers = dict(scope["headers"])
        try:
            if self.api_key is not None and scope["path"] not in OPEN_PATHS and not self._authorized(headers):
                return await _reply(_send, 401, b'{"detail":"missing or wrong API key"}',
                                    [(b"www-authenticate", b"Bearer")])
            if _length(headers) > MAX_BODY_BYTES:
                return await _reply(_send, 413, b'{"detail":"request body larger than %d bytes"}' % MAX_BODY_BYTES)
            await self.app(scope, receive, _send)
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
