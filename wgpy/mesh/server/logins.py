"""Interactive login, the node's side and the admin's (docs/mesh-api.md, "Login requests").

A node without an auth key asks to join (``POST /api/v1/login/start``), shows its person the
URL ``{server}/login/{id}`` (pages.py serves it), and waits (``GET /api/v1/login/{id}/wait``,
a long poll with the request's secret as its bearer). Once a person approved it (signed in
on the page, by OIDC, or an admin with ``wgpy admin login approve``), the first wait answers
with the node and its token, sealed to the node's WireGuard public key (a libsodium sealed
box: only the holder of the private key opens it, so approving a request made with someone
else's public key gives its maker nothing). ``DELETE /api/v1/login/{id}`` withdraws it.

The store (store/login_requests.py) decides; this module turns its answers into HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import math
import re
from typing import Any

from aiohttp import web
from nacl.public import PublicKey, SealedBox

from wgpy import keys

from . import machines, schemas
from .audit import note
from .auth import Credential, bearer_token, source_key
from .errors import BadRequest, MeshError, NotFound, TooManyRequests, Unauthorized
from .models import APPROVED, PENDING, LoginRequest, Node
from .web import CREDENTIAL, admin_key, context, rate_limit, read_json, reply

MAX_WAIT = 30.0  # seconds one wait may last
POLL = 1.0  # seconds between reads of a pending request on PostgreSQL (another replica)
_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
_SECRET = re.compile(r"[A-Za-z0-9_-]{16,128}")
_SECRET_NAME = "a login request's secret"

# What a node that waits is told when its request ends without approval.
ENDED = {
    "refused": "the login was refused",
    "cancelled": "the login request was cancelled; run wgpy up again",
    "expired": "nobody approved the login in time; run wgpy up again for a new URL",
}


def _request_id(request: web.Request) -> str:
    text = request.match_info["id"]
    if not _REQUEST_ID.fullmatch(text):
        raise NotFound("there is no such login request (mistyped?); run wgpy up again")
    return text


def _secret(request: web.Request) -> str:
    """The request's secret from ``Authorization: Bearer SECRET``, checked for form only;
    a source whose authentications keep failing is refused before the database is asked."""
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not _SECRET.fullmatch(secret.strip()):
        raise Unauthorized(
            "send the login request's secret (from /api/v1/login/start) as "
            "'Authorization: Bearer <secret>'"
        )
    wait = context(request).failures.wait(source_key(request.remote))
    if wait > 0:
        raise TooManyRequests(
            f"too many failed authentications from this address; retry in {math.ceil(wait)} s",
            wait,
        )
    request[CREDENTIAL] = _SECRET_NAME  # a failure from here on counts against the source
    return secret.strip()


def _node_token_if_any(request: web.Request) -> Credential | None:
    """The node token (``Authorization: Bearer wgpy_node_...``) of a node that logs in
    again, as with a registration: approval keeps its node even under a new key."""
    header = request.headers.get("Authorization")
    return None if header is None else bearer_token(header, "node")


def login_url(request: web.Request) -> str:
    """Where the person opens the request: ``config.public_url``, else the scheme and host
    the node reached this server at."""
    ctx = context(request)
    base = ctx.config.public_url or f"{request.scheme}://{request.host}"
    return base.rstrip("/") + "/login/"


def seal(token: str, public_key: str) -> str:
    """``token`` in a sealed box to the node's WireGuard (Curve25519) public key, base64."""
    box = SealedBox(PublicKey(keys.key_from_base64(public_key)))
    return base64.b64encode(box.encrypt(token.encode("ascii"))).decode("ascii")


def wait_reply(request: LoginRequest, now: float) -> dict[str, Any]:
    """What a wait answers for a request that is not approved (yet)."""
    if request.state == PENDING:
        return {"state": PENDING, "expires_in": max(0, math.ceil(request.expires_at - now))}
    message = ENDED.get(request.state, f"the login request is {request.state}")
    if request.state == "refused" and request.message:
        message = f"{message}: {request.message}"
    return {"state": request.state, "message": message}


def _short(request_id: str) -> str:
    return f"login request {request_id[:6]}..."


async def _authenticated(request: web.Request, request_id: str, secret: str) -> LoginRequest:
    """The request, if ``secret`` is its secret; a refusal is an audit event."""
    try:
        login = await context(request).store.login_requests.authenticate(request_id, secret)
    except Unauthorized as e:
        await note(request, "login", result="refused", method="request", detail=e.message)
        raise
    del request[CREDENTIAL]
    return login


# ----------------------------------------------------------------------------------------
# The node's endpoints


async def start(request: web.Request) -> web.Response:
    rate_limit(request)
    ctx = context(request)
    body = schemas.fields(
        await read_json(request),
        {"public_key": schemas.public_key, "hostname": schemas.hostname},
        machines.PROOF_SCHEMA,  # a machine proof (GET /api/v1/machine/challenge), optional
    )
    # checked now (a bad proof is refused before a person is asked), recorded on the request;
    # the approval refuses a request without one where the policy requires a machine
    machine = await machines.machine_of(request, body, body["public_key"])
    login, secret = await ctx.store.login_requests.create(
        body["public_key"],
        body["hostname"],
        node_token=_node_token_if_any(request),
        machine=machine,
        lifetime=ctx.config.login_lifetime,
    )
    now = ctx.clock()
    ctx.log.info("login request started", hostname=login.hostname, public_key=login.public_key[:8])
    return reply(
        {
            "id": login.id,
            "url": login_url(request) + login.id,
            "expires_in": max(0, math.ceil(login.expires_at - now)),
            "secret": secret,
        }
    )


async def wait(request: web.Request) -> web.Response:
    """Long poll: the request's state once it is decided, or after ``timeout`` seconds
    (query, 1 to 30; default 30) while it is pending. An approved request answers with the
    node and its sealed token once; after that, 409."""
    ctx = context(request)
    request_id = _request_id(request)
    secret = _secret(request)
    timeout = _timeout(request)
    store = ctx.store.login_requests
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    # On PostgreSQL another replica may decide: read again every POLL seconds. On SQLite only
    # this process decides (one server per database), and wait_decided hears it.
    poll = POLL if ctx.store.db.dialect == "postgresql" else MAX_WAIT
    login = await _authenticated(request, request_id, secret)
    while login.state == PENDING and (left := deadline - loop.time()) > 0:
        until_expiry = login.expires_at - ctx.clock() + 0.01
        await store.wait_decided(request_id, max(0.01, min(left, poll, until_expiry)))
        login = await store.authenticate(request_id, secret)
    if login.state != APPROVED:
        return reply(wait_reply(login, ctx.clock()))
    login, token = await store.take_token(request_id, secret)
    assert login.node_id is not None
    node = await ctx.store.nodes.get(login.node_id)
    ctx.known.add(token)
    ctx.log.info("node logged in interactively", node=node.id, user=node.user, method=login.method)
    await note(
        request,
        "login",
        result="ok",
        method=login.method,
        user=node.user,
        node_id=node.id,
        detail=f"interactive login: node {node.hostname} took its token ({_short(login.id)})",
    )
    return reply(
        {
            "state": APPROVED,
            "node": node.to_json(ctx.clock()),
            "sealed_token": seal(str(token), login.public_key),
        }
    )


def _timeout(request: web.Request) -> float:
    for name in request.query:
        if name != "timeout":
            raise BadRequest(f'unknown query parameter "{name[:40]}"; the only one is "timeout"')
    text = request.query.get("timeout")
    if text is None:
        return MAX_WAIT
    if not text.isdigit() or not 1 <= int(text) <= MAX_WAIT:
        raise BadRequest(f'"timeout" must be a whole number of seconds from 1 to {MAX_WAIT:g}')
    return float(text)


async def cancel(request: web.Request) -> web.Response:
    ctx = context(request)
    request_id = _request_id(request)
    await _authenticated(request, request_id, _secret(request))
    login = await ctx.store.login_requests.cancel(request_id)
    ctx.log.info("login request cancelled", public_key=login.public_key[:8])
    await note(
        request,
        "login.cancel",
        result="ok",
        detail=f"the device withdrew {_short(request_id)} for {login.hostname}",
    )
    return reply({"state": login.state})


# ----------------------------------------------------------------------------------------
# The admin's endpoints (Headscale's `nodes register`)


async def list_requests(request: web.Request) -> web.Response:
    await admin_key(request)
    ctx = context(request)
    for name in request.query:
        if name != "all":
            raise BadRequest(f'unknown query parameter "{name[:40]}"; the only one is "all"')
    every = request.query.get("all") in ("1", "true")
    requests = await ctx.store.login_requests.all(pending_only=not every)
    now = ctx.clock()
    return reply({"login_requests": [r.to_json(now) for r in requests]})


async def approve(request: web.Request) -> web.Response:
    key = await admin_key(request)
    ctx = context(request)
    request_id = _request_id(request)
    body = schemas.fields(await read_json(request), {"user": schemas.user_name})
    by = f"by API key {key.id}"
    try:
        account = await ctx.store.accounts.get(body["user"])
        if account is None:
            raise NotFound(f'there is no user "{body["user"]}"; create it first')
        node: Node = await ctx.store.login_requests.approve(request_id, account.user_id, "admin")
    except MeshError as e:
        detail = f"{_short(request_id)}: {e.message} ({by})"
        user = body["user"]
        await note(
            request, "login.approve", result="failed", method="apikey", user=user, detail=detail
        )
        raise
    ctx.log.info("login request approved by an admin", node=node.id, user=node.user)
    await note(
        request,
        "login.approve",
        result="ok",
        method="apikey",
        user=node.user,
        node_id=node.id,
        detail=f"approved {_short(request_id)} for node {node.hostname} {by}",
    )
    return reply({"node": node.to_json(ctx.clock())})


async def refuse(request: web.Request) -> web.Response:
    key = await admin_key(request)
    ctx = context(request)
    request_id = _request_id(request)
    body = schemas.fields(await read_json(request), {}, {"message": schemas.credential_text})
    message = body.get("message") or "an admin refused it"
    login = await ctx.store.login_requests.refuse(request_id, message)
    ctx.log.info("login request refused by an admin", public_key=login.public_key[:8])
    await note(
        request,
        "login.refuse",
        result="ok",
        method="apikey",
        detail=f"refused {_short(request_id)} for {login.hostname} by API key {key.id}",
    )
    return reply({"login_request": login.to_json(ctx.clock())})


def add_routes(app: web.Application, api: str) -> None:
    r = app.router
    r.add_post(f"{api}/login/start", start)
    r.add_get(f"{api}/login/{{id}}/wait", wait)
    r.add_delete(f"{api}/login/{{id}}", cancel)
    r.add_get(f"{api}/login-requests", list_requests)
    r.add_post(f"{api}/login-requests/{{id}}/approve", approve)
    r.add_post(f"{api}/login-requests/{{id}}/refuse", refuse)
