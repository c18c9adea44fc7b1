"""What every route shares: the request context, JSON replies and errors, request bodies,
and the authentication of requests (credentials, failure counting, rate limits).

Route modules (app.py for nodes, admin.py for admins) import this one and nothing imports
them back but create_app: a new set of routes is a new module beside them.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from cryptography import x509

from wgpy.log import get_logger

from . import schemas
from .auth import Credential, KnownCredentials, RateLimiter, bearer_token, source_key
from .config import ServerConfig
from .errors import (
    Forbidden,
    MeshError,
    NotAllowed,
    RequestTimeout,
    TooLarge,
    TooManyRequests,
    Unauthorized,
)
from .guard import UnreadStreams
from .hub import Hub
from .metrics import ServerMetrics
from .models import ApiKey, Node
from .nat import TurnSettings
from .oidc_client import OidcClient
from .signin import SignIn
from .store import Store

__all__ = [
    "CONTEXT",
    "Context",
    "admin_key",
    "authenticating",
    "context",
    "error_reply",
    "errors_middleware",
    "node_of",
    "rate_limit",
    "read_json",
    "refuse_failing_source",
    "reply",
    "signin_of",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")


FULL_MAPS_AT_ONCE = 16


@dataclass
class Context:
    """What a request's handler reaches through :func:`context`: the server's parts."""

    config: ServerConfig
    store: Store
    hub: Hub
    limiter: RateLimiter  # registrations and logins, per source
    failures: RateLimiter  # failed authentications, per source
    unread: UnreadStreams  # map streams whose client stopped reading
    clock: Callable[[], float] = time.time
    # Where the STUN responder listens, as bound (0.0.0.0 and ::: every address), and the
    # TURN relays with their secret (None: no relay).
    stun: list[tuple[str, int]] = field(default_factory=list)
    turn: TurnSettings | None = None
    # The operator's machine CA (config.machine_ca, loaded and checked at start); None: none.
    machine_ca: x509.Certificate | None = None
    # Full maps being built and written at once: a mesh of N nodes that all reconnect (after
    # a restart) would otherwise hold N full maps of N - 1 peers in memory together.
    full_map_slots: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(FULL_MAPS_AT_ONCE)
    )
    # A node's endpoint and candidate reports (config.report_rate/report_burst): each goes
    # to every peer that may reach it, and each peer then checks (sends to) the candidates.
    # A node starts with a few reports and sends one per network change; this bounds how
    # often a hostile one can make its peers send to addresses it names. None: made from
    # the config at the first report.
    reports: RateLimiter | None = None
    # Credentials that authenticated: a failing source is not refused them (refuse_failing_source).
    known: KnownCredentials = field(default_factory=KnownCredentials)
    # People's sign-ins (passwords, TOTP, lockout); None: made over the store when first used.
    signin: SignIn | None = None
    # Single sign-on's identity provider (config.oidc, set up at start); None: no OIDC.
    oidc: OidcClient | None = None
    # Counted whether or not they are served (config.metrics_listen): counting is cheap.
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    # Bound when the app is made: after the command line has configured logging.
    log: Any = field(default_factory=lambda: get_logger(component="api"))


CONTEXT = web.AppKey("wgpy_mesh", Context)
CREDENTIAL = web.RequestKey("wgpy_credential", str)  # the kind a request authenticates with


def context(request: web.Request) -> Context:
    return request.app[CONTEXT]


def reply(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, headers={"Cache-Control": "no-store"})


def error_reply(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    response = web.json_response({"error": message}, status=status, headers=headers)
    response.headers["Cache-Control"] = "no-store"
    return response


_HTTP_MESSAGES = {
    404: "there is no such endpoint; see docs/mesh-api.md",
    405: "this endpoint does not take that method; see docs/mesh-api.md",
}


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except MeshError as e:
        failed = isinstance(e, Unauthorized | Forbidden) and not isinstance(e, NotAllowed)
        if failed and request.get(CREDENTIAL):
            _authentication_failed(request, e)
        return error_reply(e.status, e.message, e.headers)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        if e.status == 413:
            return error_reply(413, _too_large(context(request)).message)
        message = _HTTP_MESSAGES.get(e.status, e.reason)
        headers = {k: v for k, v in e.headers.items() if k in ("Allow",)}
        return error_reply(e.status, message, headers)
    except Exception:
        context(request).log.exception("request failed", method=request.method, path=request.path)
        return error_reply(500, "the server failed to handle the request; its log says why")


def _too_large(ctx: Context) -> TooLarge:
    return TooLarge(f"the request body is larger than {ctx.config.max_body // 1024} KiB")


async def read_json(request: web.Request, *, empty_ok: bool = False) -> Any:
    ctx = context(request)
    if request.content_length is not None and request.content_length > ctx.config.max_body:
        raise _too_large(ctx)
    try:
        async with asyncio.timeout(ctx.config.body_timeout):
            raw = await request.read()  # the app's client_max_size stops longer chunked bodies
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(ctx) from None
    except TimeoutError:
        raise RequestTimeout(
            f"the request body took longer than {ctx.config.body_timeout:g} s to arrive; "
            "send it at once"
        ) from None
    if empty_ok and not raw.strip():
        return {}
    return schemas.parse_json(raw)


async def admin_key(request: web.Request) -> ApiKey:
    key = bearer_token(request.headers.get("Authorization"), "api")
    refuse_failing_source(request, key)
    check = context(request).store.api_keys.check(key)
    return await authenticating(request, "an admin API key", key, check)


async def node_of(request: web.Request, *, rate_limited: bool = False) -> Node:
    """The node whose token the request carries; ``rate_limited``: a login, which also
    counts against the source's registrations and logins."""
    token = bearer_token(request.headers.get("Authorization"), "node")
    refuse_failing_source(request, token)
    if rate_limited:
        rate_limit(request)
    check = context(request).store.nodes.authenticate(token)
    return await authenticating(request, "a node token", token, check)


async def authenticating(
    request: web.Request, name: str, credential: Credential, check: Awaitable[T]
) -> T:
    """Await ``check`` of a well-formed ``credential``: if it fails, the failure counts
    (errors_middleware); once it passed, the credential is known (refuse_failing_source)
    and what the request does next is not authentication."""
    previous = request.get(CREDENTIAL)
    request[CREDENTIAL] = name
    result = await check
    context(request).known.add(credential)
    if previous is None:
        del request[CREDENTIAL]
    else:
        request[CREDENTIAL] = previous
    return result


def refuse_failing_source(request: web.Request, credential: Credential) -> None:
    """429, before the database is asked, for a source whose authentications keep failing
    (guessed tokens or keys), unless ``credential`` authenticated before: others behind the
    same address (NAT, proxy) keep working, and the database still checks its secret.
    Failures count from :func:`errors_middleware`: a credential of the right form that the
    database refused (or found expired)."""
    ctx = context(request)
    if credential in ctx.known:
        return
    wait = ctx.failures.wait(source_key(request.remote))
    if wait > 0:
        raise TooManyRequests(
            "too many failed authentications from this address; check the credential and "
            f"retry in {math.ceil(wait)} s",
            wait,
        )


def _authentication_failed(request: web.Request, error: MeshError) -> None:
    """Count a failed authentication against its source and log it (never the secret)."""
    ctx = context(request)
    source = source_key(request.remote)
    ctx.failures.take(source)
    ctx.log.warning(
        "authentication failed",
        credential=request[CREDENTIAL],
        source=request.remote,
        path=request.path,
        status=error.status,
    )


def signin_of(ctx: Context) -> SignIn:
    """The server's :class:`SignIn` (made at the first use)."""
    if ctx.signin is None:
        ctx.signin = SignIn(ctx.store, enrol_on_sign_in=ctx.config.totp_enrolment != "admin")
    return ctx.signin


def report_limit(request: web.Request, node: Node) -> None:
    """Endpoint, candidate and route reports, per node (``config.report_rate``,
    ``report_burst``)."""
    ctx = context(request)
    if ctx.reports is None:
        ctx.reports = RateLimiter(ctx.config.report_rate, ctx.config.report_burst)
    wait = ctx.reports.take(f"node:{node.id}")
    if wait > 0:
        raise TooManyRequests(
            "too many endpoint, candidate or route reports from this node; "
            f"retry in {math.ceil(wait)} s",
            wait,
        )


def rate_limit(request: web.Request) -> None:
    """Registrations and logins, per source."""
    wait = context(request).limiter.take(source_key(request.remote))
    if wait > 0:
        raise TooManyRequests(
            f"too many registrations or logins from this address; retry in {math.ceil(wait)} s",
            wait,
        )
