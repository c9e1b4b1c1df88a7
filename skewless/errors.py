"""Error classes. Every error a user can cause or fix carries a one-line message.

The CLI prints ``str(error)`` (and the traceback only with ``--verbose``); an HTTP
layer can map ``http_status`` straight to a response.
"""

from __future__ import annotations


class SkewlessError(Exception):
    """Base class: a problem with a clear message, and optionally how to fix it."""

    http_status = 500
    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(SkewlessError):
    """The settings file or an environment override is invalid."""

    http_status = 500
    exit_code = 2


class MissingDependencyError(SkewlessError):
    """A tool the project needs (Java, mvn, redis-server, ...) is not installed."""

    exit_code = 3

    def __init__(self, tool: str, install: str):
        super().__init__(f"{tool} is not installed or not on PATH", f"install it with: {install}")
        self.tool = tool


class ServiceError(SkewlessError):
    """A service (Kafka, Redis) could not be started, reached or stopped."""

    http_status = 503
    exit_code = 4


class DataError(SkewlessError):
    """Data on disk or on the wire is not what a contract says it should be."""

    http_status = 422
