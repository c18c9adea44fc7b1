"""The node endpoints, among them the map stream, and the application that joins every set of
routes. What every route shares (errors as JSON, body limits, credentials, rate limits):
web.py; admin routes: admin.py.

A node token names one node and every node endpoint acts on that node only: no node endpoint
takes a node id, so one node cannot act on another.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
from collections.abc import Awaitable

from aiohttp import web

from . import (
    admin,
    audit,
    dns_api,
    login_pages,
    logins,
    machines,
    metrics,
    nat,
    oidc_routes,
    pages,
    schemas,
)
from .auth import Credential, bearer_token, parse_credential, source_key
from .errors import Forbidden, MeshError, Unauthorized
from .hub import KEEPALIVE
from .models import MachineRecord
from .routes_api import add_routes as routes_api_add_routes
from .web import (
    CONTEXT,
    Context,
    authenticating,
    context,
    errors_middleware,
    node_of,
    rate_limit,
    read_json,
    refuse_failing_source,
    reply,
    report_limit,
)

FULL_MAP_SLOT = 5.0  # seconds a slow reader may hold a slot before the next map is built
WRITE_TIMEOUT = 30.0  # seconds
STALLED = 2.0  # seconds a map stream's write may wait before the stream counts as unread
# A subnet router's stream is probed by the kernel (TCP keepalives) every ROUTER_PROBE seconds
# once idle, and given up after ROUTER_DEAD_AFTER seconds without an answer: a router whose
# host or link died is offline, and its standby primary, within seconds rather than when TCP
# stops retransmitting (minutes). Other nodes' streams are not probed: 10,000 nodes would
# otherwise answer 10,000 probes a second.
ROUTER_PROBE = 1  # seconds
ROUTER_DEAD_AFTER = 3  # seconds


def _node_token_if_any(request: web.Request) -> Credential | None:
    """The node token a registration carries to prove it holds the key's node; a missing or
    malformed one proves nothing (a new key needs no proof)."""
    try:
        return bearer_token(request.headers.get("Authorization"), "node")
    except Unauthorized:
        return None


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
        machines.PROOF_SCHEMA,
    )
    auth_key = parse_credential(body["auth_key"], "auth")
    refuse_failing_source(request, auth_key)
    what = f"auth key {auth_key.id}, hostname {body['hostname']}"
    try:
        machine = await machines.machine_of(request, body, body["public_key"])
        check = ctx.store.nodes.register(
            auth_key,
            body["public_key"],
            body["hostname"],
            holder=_node_token_if_any(request),
            max_nodes=ctx.config.max_nodes_per_user,
            machine=machine,
        )
        node, token = await authenticating(request, "an auth key", auth_key, check)
    except MeshError as e:
        await audit.note(
            request,
            "register",
            result=_result_of(e),
            method="authkey",
            detail=f"{what}: {e.message}",
        )
        raise
    ctx.known.add(token)
    ctx.log.info("node registered", node=node.id, user=node.user, hostname=node.hostname)
    await audit.note(
        request,
        "register",
        result=audit.OK,
        method="authkey",
        user=node.user,
        node_id=node.id,
        detail=f"{what}{_machine_note(machine)}",
    )
    return reply({"node": node.to_json(ctx.clock()), "token": str(token)})


def _machine_note(machine: MachineRecord | None) -> str:
    return "" if machine is None else f", machine {machine.name} (serial {machine.serial})"


def _result_of(error: MeshError) -> str:
    return audit.REFUSED if isinstance(error, Unauthorized | Forbidden) else audit.FAILED


async def login(request: web.Request) -> web.Response:
    ctx = context(request)
    token = bearer_token(request.headers.get("Authorization"), "node")  # malformed: no event
    try:
        node = await node_of(request, rate_limited=True)
    except (Unauthorized, Forbidden) as e:
        detail = f"node token {token.id}: {e.message}"
        await audit.note(request, "login", result=audit.REFUSED, method="token", detail=detail)
        raise
    body = schemas.fields(
        await read_json(request),
        {"public_key": schemas.public_key, "hostname": schemas.hostname},
        machines.PROOF_SCHEMA,
    )
    key_change = body["public_key"] != node.public_key
    machine = None
    try:
        machine = await machines.machine_of(request, body, body["public_key"])
        node = await ctx.store.nodes.login(
            node.id, body["public_key"], body["hostname"], machine=machine
        )
    except MeshError as e:
        await audit.note(
            request,
            "login",
            result=_result_of(e),
            method="token",
            user=node.user,
            node_id=node.id,
            detail=e.message,
        )
        raise
    await audit.note(
        request,
        "login",
        result=audit.OK,
        method="token",
        user=node.user,
        node_id=node.id,
        detail=(f"new key {body['public_key']}" if key_change else "same key")
        + _machine_note(machine),
    )
    return reply({"node": node.to_json(ctx.clock())})


async def set_endpoints(request: web.Request) -> web.Response:
    ctx = context(request)
    node = await node_of(request)
    report_limit(request, node)
    body = schemas.fields(await read_json(request), {"endpoints": schemas.endpoints})
    await ctx.store.nodes.set_endpoints(node.id, body["endpoints"])
    return reply({})


async def set_candidates(request: web.Request) -> web.Response:
    """The node's ICE candidates and ufrag; its peers hear of a change. An ``ice_pwd`` (sent
    by nodes before per-pair keys) is checked and ignored: the server keeps none."""
    ctx = context(request)
    node = await node_of(request)
    report_limit(request, node)
    body = schemas.fields(
        await read_json(request),
        {"ice_ufrag": schemas.ice_ufrag, "candidates": schemas.candidates},
        {"ice_pwd": schemas.ice_pwd},
    )
    await ctx.store.ice.report(node.id, body["ice_ufrag"], body["candidates"])
    return reply({})


async def nat_config(request: web.Request) -> web.Response:
    """Where the STUN responder is, and TURN credentials for this node (nat.py)."""
    ctx = context(request)
    node = await node_of(request)
    host = nat.api_host(request.headers.get("Host")) or _local_host(request)
    turn = ctx.turn.credentials(node.id, ctx.clock()) if ctx.turn is not None else []
    ttl = ctx.turn.ttl if ctx.turn is not None else nat.DEFAULT_TURN_TTL
    return reply(
        {
            "stun": nat.stun_addresses(ctx.stun, host) if host else [],
            "turn": turn,
            "refresh": ttl // 2,
        }
    )


def _local_host(request: web.Request) -> str | None:
    """The address the request arrived at (a request without a usable Host header)."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    return str(sockname[0]).partition("%")[0] if sockname else None


async def logout(request: web.Request) -> web.Response:
    ctx = context(request)
    node = await node_of(request)
    schemas.fields(await read_json(request, empty_ok=True), {})
    await ctx.store.nodes.logout(node.id)
    stream = ctx.hub.streams.get(node.id)
    if stream is not None:
        stream.close()
    ctx.log.info("node logged out", node=node.id)
    await audit.note(
        request, "logout", result=audit.OK, method="token", user=node.user, node_id=node.id
    )
    return reply({})


async def node_map(request: web.Request) -> web.StreamResponse:
    """The NDJSON map stream: the full map, then deltas, keepalives when idle. The node is
    online while it is open."""
    ctx = context(request)
    node = await node_of(request)
    stream_id = secrets.token_hex(8)
    await ctx.store.streams.opened(node.id, stream_id)
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
            # Every change committed before now (this node's registration, a peer's that
            # came just before) is in the index the full map is taken from: a client reads
            # its own writes, and does not get a peer first as a delta a moment later.
            await ctx.hub.flush()
            stream, full = ctx.hub.open_stream(node.id, stream_id)
            await response.prepare(request)
            _bound_buffers(request, ctx.config.stream_send_buffer)
            if any(r.advertised for r in ctx.hub.index.routes.get(node.id, ())):
                _probe_often(request)
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


def _probe_often(request: web.Request) -> None:
    """Keepalive probes on a subnet router's stream (see ROUTER_PROBE): a dead peer makes
    the kernel abort the connection, and aiohttp then cancels the handler, which ends the
    stream and hands the router's prefixes to its standby."""
    transport = request.transport
    sock = None if transport is None else transport.get_extra_info("socket")
    if sock is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, ROUTER_PROBE)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, ROUTER_PROBE)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, ROUTER_DEAD_AFTER)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, ROUTER_DEAD_AFTER * 1000)


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
    app = web.Application(
        client_max_size=ctx.config.max_body,
        middlewares=[errors_middleware, metrics.middleware(ctx.metrics)],
    )
    app[CONTEXT] = ctx
    api = "/api/v1"
    app.router.add_post(f"{api}/register", register)
    app.router.add_post(f"{api}/login", login)
    app.router.add_post(f"{api}/node/endpoints", set_endpoints)
    app.router.add_post(f"{api}/node/candidates", set_candidates)
    app.router.add_get(f"{api}/node/nat", nat_config)
    dns_api.add_routes(app, api)
    app.router.add_get(f"{api}/node/map", node_map)
    app.router.add_post(f"{api}/logout", logout)
    logins.add_routes(app, api)
    machines.add_routes(app, api)
    admin.add_routes(app, api)
    routes_api_add_routes(app, api)
    pages.add_routes(app)
    login_pages.add_routes(app)
    oidc_routes.add_routes(app)
    return app
