"""The aiohttp application: what every route shares (errors as JSON, body limits, credentials,
rate limits) and the node endpoints, among them the map stream. Admin routes: admin.py.

A node token names one node and every node endpoint acts on that node only: no node endpoint
takes a node id, so one node cannot act on another.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web

from wgpy.log import get_logger

from . import schemas
from .auth import (
    Credential,
    KnownCredentials,
    RateLimiter,
    bearer_token,
    parse_credential,
    source_key,
)
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
from .hub import KEEPALIVE, Hub
from .models import ApiKey, Node
from .store import Store

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")


FULL_MAPS_AT_ONCE = 16
FULL_MAP_SLOT = 5.0  # seconds a slow reader may hold a slot before the next map is built


@dataclass
class Context:
    config: ServerConfig
    store: Store
    hub: Hub
    limiter: RateLimiter  # registrations and logins, per source
    failures: RateLimiter  # failed authentications, per source
    unread: UnreadStreams  # map streams whose client stopped reading
    clock: Callable[[], float] = time.time
    # Full maps being built and written at once: a mesh of N nodes that all reconnect (after
    # a restart) would otherwise hold N full maps of N - 1 peers in memory together.
    full_map_slots: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(FULL_MAPS_AT_ONCE)
    )
    # Credentials that authenticated: a failing source is not refused them (refuse_failing_source).
    known: KnownCredentials = field(default_factory=KnownCredentials)
    # Bound when the app is made: after the command line has configured logging.
    log: Any = field(default_factory=lambda: get_logger(component="api"))


CONTEXT = web.AppKey("wgpy_mesh", Context)
CREDENTIAL = web.RequestKey("wgpy_credential", str)  # the kind a request authenticates with
WRITE_TIMEOUT = 30.0  # seconds
STALLED = 2.0  # seconds a map stream's write may wait before the stream counts as unread


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
    check = context(request).store.check_api_key(key)
    return await _authenticating(request, "an admin API key", key, check)


async def node_of(request: web.Request, *, rate_limited: bool = False) -> Node:
    """The node whose token the request carries; ``rate_limited``: a login, which also
    counts against the source's registrations and logins."""
    token = bearer_token(request.headers.get("Authorization"), "node")
    refuse_failing_source(request, token)
    if rate_limited:
        rate_limit(request)
    check = context(request).store.authenticate_node(token)
    return await _authenticating(request, "a node token", token, check)


async def _authenticating(
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


def _node_token_if_any(request: web.Request) -> Credential | None:
    """The node token a registration carries to prove it holds the key's node; a missing or
    malformed one proves nothing (a new key needs no proof)."""
    try:
        return bearer_token(request.headers.get("Authorization"), "node")
    except Unauthorized:
        return None


def rate_limit(request: web.Request) -> None:
    """Registrations and logins, per source."""
    wait = context(request).limiter.take(source_key(request.remote))
    if wait > 0:
        raise TooManyRequests(
            f"too many registrations or logins from this address; retry in {math.ceil(wait)} s",
            wait,
        )


# ----------------------------------------------------------------------------------------
# Node endpoints


async def register(request: web.Request) -> web.Response:
    rate_limit(request)
    ctx = context(request)
    body = schemas.fields(
        await read_json(request),
        {
            "auth_key": schemas.credential_text,
            "public_key": schemas.public_key,
            "hostname": schemas.hostname,
        },
    )
    auth_key = parse_credential(body["auth_key"], "auth")
    refuse_failing_source(request, auth_key)
    check = ctx.store.register(
        auth_key,
        body["public_key"],
        body["hostname"],
        holder=_node_token_if_any(request),
        max_nodes=ctx.config.max_nodes_per_user,
    )
    node, token = await _authenticating(request, "an auth key", auth_key, check)
    ctx.known.add(token)
    ctx.log.info("node registered", node=node.id, user=node.user, hostname=node.hostname)
    return reply({"node": node.to_json(ctx.clock()), "token": str(token)})


async def login(request: web.Request) -> web.Response:
    ctx = context(request)
    node = await node_of(request, rate_limited=True)
    body = schemas.fields(
        await read_json(request),
        {"public_key": schemas.public_key, "hostname": schemas.hostname},
    )
    node = await ctx.store.login(node.id, body["public_key"], body["hostname"])
    return reply({"node": node.to_json(ctx.clock())})


async def set_endpoints(request: web.Request) -> web.Response:
    ctx = context(request)
    node = await node_of(request)
    body = schemas.fields(await read_json(request), {"endpoints": schemas.endpoints})
    await ctx.store.set_endpoints(node.id, body["endpoints"])
    return reply({})


async def logout(request: web.Request) -> web.Response:
    ctx = context(request)
    node = await node_of(request)
    schemas.fields(await read_json(request, empty_ok=True), {})
    await ctx.store.logout(node.id)
    stream = ctx.hub.streams.get(node.id)
    if stream is not None:
        stream.close()
    ctx.log.info("node logged out", node=node.id)
    return reply({})


async def node_map(request: web.Request) -> web.StreamResponse:
    """The NDJSON map stream: the full map, then deltas, keepalives when idle. The node is
    online while it is open."""
    ctx = context(request)
    node = await node_of(request)
    stream_id = secrets.token_hex(8)
    await ctx.store.stream_opened(node.id, stream_id)
    response = web.StreamResponse(
        headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-store"}
    )
    # A client that stops reading holds a write for at most this long, then loses the
    # connection; meanwhile its stream ends once it falls too far behind (hub.MapStream).
    timeout = WRITE_TIMEOUT + ctx.config.keepalive
    stream = None
    sending: asyncio.Future[None] | None = None
    try:
        async with ctx.full_map_slots:
            if node.id not in ctx.hub.index.entries:
                await ctx.hub.flush()  # a node that just registered: bring it into the index
            stream, full = ctx.hub.open_stream(node.id, stream_id)
            await response.prepare(request)
            _bound_buffers(request, ctx.config.stream_send_buffer)
            # The map leaves this process (the write returns once the socket took all but
            # the transport's low-water mark) or the slot passes on after FULL_MAP_SLOT.
            sending = asyncio.ensure_future(_written(request, response, full))
            del full
            await asyncio.wait({sending}, timeout=FULL_MAP_SLOT)
        await _write(request, sending, timeout)
        while (lines := await stream.next(ctx.config.keepalive)) is not None:
            data = b"".join(lines) if lines else KEEPALIVE
            await _write(request, _written(request, response, data), timeout)
        await _write(request, response.write_eof(), timeout)
    except ConnectionError:
        pass  # the client went away (or aiohttp cancels the handler: CancelledError)
    finally:
        if sending is not None and not sending.done():
            sending.cancel()
        if stream is None:
            ctx.hub.stream_ended(node.id, stream_id)
        else:
            ctx.hub.stream_done(stream)
    return response


def _bound_buffers(request: web.Request, size: int) -> None:
    """A stream whose client stops reading pins its send buffers until it is closed: keep
    the kernel's (SO_SNDBUF) and the transport's small."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    with contextlib.suppress(AttributeError, NotImplementedError):
        transport.set_write_buffer_limits(high=size)


async def _written(request: web.Request, response: web.StreamResponse, data: bytes) -> None:
    """Write ``data``, then wait while the transport holds more than its high-water mark
    (aiohttp itself waits only every 64 KiB written)."""
    await response.write(data)
    await request.writer.drain()


async def _write(request: web.Request, write: Awaitable[None], timeout: float) -> None:
    """Write to the stream. A write still pending after STALLED seconds makes the stream
    *unread*: over the caps (per source, in all) it is closed at once, else after
    ``timeout``."""
    task = asyncio.ensure_future(write)
    try:
        done, _ = await asyncio.wait({task}, timeout=min(STALLED, timeout))
        if done:
            return task.result()
        unread = context(request).unread
        source = source_key(request.remote)
        if not unread.add(source):
            _abort(request)
            raise ConnectionError("too many map streams are not read; closed this one")
        try:
            await asyncio.wait_for(task, max(0.0, timeout - STALLED))
        except TimeoutError:
            _abort(request)
            raise ConnectionError("the client stopped reading its map stream") from None
        finally:
            unread.remove(source)
    finally:
        if not task.done():
            task.cancel()


def _abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()


def create_app(ctx: Context) -> web.Application:
    from . import admin

    app = web.Application(client_max_size=ctx.config.max_body, middlewares=[errors_middleware])
    app[CONTEXT] = ctx
    api = "/api/v1"
    app.router.add_post(f"{api}/register", register)
    app.router.add_post(f"{api}/login", login)
    app.router.add_post(f"{api}/node/endpoints", set_endpoints)
    app.router.add_get(f"{api}/node/map", node_map)
    app.router.add_post(f"{api}/logout", logout)
    admin.add_routes(app, api)
    return app
