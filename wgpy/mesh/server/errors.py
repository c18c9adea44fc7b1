"""Errors a request can end in: each carries its HTTP status and one sentence for the client
that says what is wrong and what to do. Every layer raises them; the app renders them as
``{"error": "..."}``."""

from __future__ import annotations


class MeshError(Exception):
    status = 500

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadRequest(MeshError):
    status = 400


class Unauthorized(MeshError):
    """No credential, or one that is not valid (unknown, malformed, wrong secret)."""

    status = 401

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer realm="wgpy"'})


class Forbidden(MeshError):
    """A valid credential that may not do this (expired, used, another node's)."""

    status = 403


class NotAllowed(Forbidden):
    """A credential that passed, asking for what it may not have (a quota, a tag): not a
    failed authentication."""


class NotFound(MeshError):
    status = 404


class Conflict(MeshError):
    status = 409


class RequestTimeout(MeshError):
    status = 408


class TooLarge(MeshError):
    status = 413


class Unavailable(MeshError):
    status = 503


class TooManyRequests(MeshError):
    status = 429

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, round(retry_after + 0.5)))})
