"""Admin endpoints: users (their passwords and TOTP too), pre-auth keys, nodes, the policy,
API keys, machine certificates, the audit log. Each needs an admin API key
(``Authorization: Bearer wgpy_api_...``); secrets appear once, in the creating reply;
passwords never appear in a reply or a log. Every action that changes something is an audit
event (``_action``), the refused and failed ones too."""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections.abc import Awaitable, Callable

from aiohttp import web

from wgpy import machinecert

from . import audit, schemas
from .auth import bearer_token
from .errors import BadRequest, Conflict, Forbidden, MeshError, NotFound, Unauthorized
from .models import ApiKey, iso
from .store.audit import MAX_LIST
from .web import admin_key, context, read_json, reply, signin_of

Handler = Callable[[web.Request], Awaitable[web.Response]]
AUDIT_USER = web.RequestKey("wgpy_audit_user", str)  # the user an admin action was about
AUDIT_DETAIL = web.RequestKey("wgpy_audit_detail", str)  # what it did (never a secret)
ADMIN_KEY = web.RequestKey("wgpy_admin_key", ApiKey)  # the API key of an action (_action)


async def _admin_key(request: web.Request) -> ApiKey:
    """The request's admin API key; a refused one is an audit event ("admin")."""
    bearer_token(request.headers.get("Authorization"), "api")  # malformed: no event
    try:
        return await admin_key(request)
    except (Unauthorized, Forbidden) as e:
        detail = f"{request.method} {request.path[:100]}: {e.message}"
        await audit.note(request, "admin", result=audit.REFUSED, method="apikey", detail=detail)
        raise


def _admin(handler: Handler) -> Handler:
    """A route that reads: an admin API key, no audit event when it passes."""

    async def checked(request: web.Request) -> web.Response:
        await _admin_key(request)
        return await handler(request)

    return checked


def _action(event: str) -> Callable[[Handler], Handler]:
    """A route that changes something: an admin API key, and an audit ``event`` with the
    result, the user (``{name}`` in the path, or what the handler put in
    ``request[AUDIT_USER]``), the node (``{id}`` of a nodes path) and what the handler put in
    ``request[AUDIT_DETAIL]``."""

    def wrap(handler: Handler) -> Handler:
        async def checked(request: web.Request) -> web.Response:
            key = await _admin_key(request)
            request[ADMIN_KEY] = key
            try:
                response = await handler(request)
            except MeshError as e:
                await _note_action(request, event, audit.FAILED, f"{e.message} (API key {key.id})")
                raise
            done = request.get(AUDIT_DETAIL)
            by = f"by API key {key.id}"
            await _note_action(request, event, audit.OK, f"{done} {by}" if done else by)
            return response

        return checked

    return wrap


async def _note_action(request: web.Request, event: str, result: str, detail: str) -> None:
    node = request.match_info.get("id", "") if event.startswith("nodes.") else ""
    name = request.match_info.get("name") if event.startswith("users.") else None
    await audit.note(
        request,
        event,
        result=result,
        method="apikey",
        user=request.get(AUDIT_USER, name),
        node_id=int(node) if node.isdigit() and len(node) <= 18 else None,
        detail=detail,
    )


def _node_id(request: web.Request) -> int:
    text = request.match_info["id"]
    if not re.fullmatch(r"[0-9]{1,18}", text):
        raise BadRequest(f'"{text[:40]}" is not a node id (a number)')
    return int(text)


def _key_id(request: web.Request) -> str:
    text = request.match_info["id"]
    if not re.fullmatch(r"[0-9a-f]{16}", text):
        raise BadRequest("a key id is 16 hexadecimal digits")
    return text


def _user_query(request: web.Request) -> str | None:
    for name in request.query:
        if name != "user":
            raise BadRequest(f'unknown query parameter "{name[:40]}"; the only one is "user"')
    user = request.query.get("user")
    return None if user is None else schemas.user_name("user", user)


# ----------------------------------------------------------------------------------------
# Users


@_admin
async def list_users(request: web.Request) -> web.Response:
    return reply({"users": [u.to_json() for u in await context(request).store.users.all()]})


@_action("users.create")
async def create_user(request: web.Request) -> web.Response:
    ctx = context(request)
    body = schemas.fields(
        await read_json(request), {"name": schemas.user_name}, {"password": schemas.password}
    )
    password_hash = None
    if "password" in body:  # hashed before the user exists: a refused password leaves none
        password_hash = await signin_of(ctx).hash_password(body["password"])
    request[AUDIT_USER] = body["name"]
    user = await ctx.store.users.create(body["name"])
    if password_hash is not None:
        await ctx.store.accounts.set_password(user.name, password_hash)
        user = dataclasses.replace(user, password=True)
    ctx.log.info("user created", user=user.name, password=password_hash is not None)
    return reply({"user": user.to_json()})


@_action("users.password")
async def set_password(request: web.Request) -> web.Response:
    ctx = context(request)
    name = schemas.user_name("user", request.match_info["name"])
    body = schemas.fields(await read_json(request), {"password": schemas.password})
    if await ctx.store.accounts.get(name) is None:  # before the work of hashing
        raise NotFound(f'there is no user "{name}"')
    await signin_of(ctx).set_password(name, body["password"])
    ctx.log.info("password set", user=name)
    return reply({})


@_action("users.totp_reset")
async def reset_totp(request: web.Request) -> web.Response:
    ctx = context(request)
    name = schemas.user_name("user", request.match_info["name"])
    schemas.fields(await read_json(request, empty_ok=True), {})
    await ctx.store.accounts.reset_totp(name)
    ctx.log.info("TOTP reset", user=name)
    return reply({})


@_action("users.totp_enrol")
async def enrol_totp(request: web.Request) -> web.Response:
    """An admin sets up a user's TOTP: the key and otpauth URI, shown once (never logged
    nor in the audit log), to hand to the person."""
    ctx = context(request)
    name = schemas.user_name("user", request.match_info["name"])
    schemas.fields(await read_json(request, empty_ok=True), {})
    enrolment = await signin_of(ctx).enrol(name)
    ctx.log.info("TOTP enrolled by an admin", user=name)
    return reply({"user": name, "secret": enrolment.secret, "uri": enrolment.uri})


@_action("users.delete")
async def delete_user(request: web.Request) -> web.Response:
    name = schemas.user_name("user", request.match_info["name"])
    await context(request).store.users.delete(name)
    context(request).log.info("user deleted", user=name)
    return reply({})


# ----------------------------------------------------------------------------------------
# Pre-auth keys


@_admin
async def list_preauth_keys(request: web.Request) -> web.Response:
    ctx = context(request)
    keys = await ctx.store.preauth_keys.all(_user_query(request))
    return reply({"preauthkeys": [k.to_json(ctx.clock()) for k in keys]})


@_action("preauthkeys.create")
async def create_preauth_key(request: web.Request) -> web.Response:
    ctx = context(request)
    body = schemas.fields(
        await read_json(request),
        {"user": schemas.user_name},
        {
            "reusable": schemas.boolean,
            "ephemeral": schemas.boolean,
            "expiration_seconds": schemas.seconds,
            "tags": schemas.tags,
        },
    )
    key, secret = await ctx.store.preauth_keys.create(
        body["user"],
        reusable=body.get("reusable", False),
        ephemeral=body.get("ephemeral", False),
        tags=body.get("tags", ()),
        lifetime=body.get("expiration_seconds", ctx.config.preauth_lifetime),
    )
    context(request).log.info("pre-auth key created", key=key.id, user=key.user)
    request[AUDIT_USER] = key.user
    request[AUDIT_DETAIL] = f"created key {key.id}"
    return reply({"preauthkey": {**key.to_json(ctx.clock()), "key": str(secret)}})


@_action("preauthkeys.expire")
async def expire_preauth_key(request: web.Request) -> web.Response:
    ctx = context(request)
    schemas.fields(await read_json(request, empty_ok=True), {})
    key = await ctx.store.preauth_keys.expire(_key_id(request))
    request[AUDIT_USER] = key.user
    request[AUDIT_DETAIL] = f"expired key {key.id}"
    return reply({"preauthkey": key.to_json(ctx.clock())})


# ----------------------------------------------------------------------------------------
# Nodes


@_admin
async def list_nodes(request: web.Request) -> web.Response:
    ctx = context(request)
    nodes = await ctx.store.nodes.all(_user_query(request))
    now = ctx.clock()
    return reply({"nodes": [n.to_json(now) for n in nodes]})


@_action("nodes.expire")
async def expire_node(request: web.Request) -> web.Response:
    ctx = context(request)
    schemas.fields(await read_json(request, empty_ok=True), {})
    node = await ctx.store.nodes.expire(_node_id(request))
    context(request).log.info("node expired", node=node.id)
    return reply({"node": node.to_json(ctx.clock())})


@_action("nodes.expiry")
async def set_node_expiry(request: web.Request) -> web.Response:
    """``{"expiry": "never"}`` (a server's node) or ``{"expiry": SECONDS}`` from now."""
    ctx = context(request)
    body = schemas.fields(await read_json(request), {"expiry": schemas.expiry})
    expires_at = None if body["expiry"] is None else ctx.clock() + body["expiry"]
    node = await ctx.store.nodes.set_expiry(_node_id(request), expires_at)
    ctx.log.info("node expiry set", node=node.id, expires_at=iso(node.expires_at))
    return reply({"node": node.to_json(ctx.clock())})


@_action("nodes.delete")
async def delete_node(request: web.Request) -> web.Response:
    node_id = _node_id(request)
    await context(request).store.nodes.delete(node_id)
    context(request).log.info("node deleted", node=node_id)
    return reply({})


@_action("nodes.rename")
async def rename_node(request: web.Request) -> web.Response:
    ctx = context(request)
    body = schemas.fields(await read_json(request), {"hostname": schemas.hostname})
    node = await ctx.store.nodes.rename(_node_id(request), body["hostname"])
    return reply({"node": node.to_json(ctx.clock())})


@_action("nodes.tags")
async def tag_node(request: web.Request) -> web.Response:
    ctx = context(request)
    body = schemas.fields(await read_json(request), {"tags": schemas.tags})
    node = await ctx.store.nodes.set_tags(_node_id(request), body["tags"])
    return reply({"node": node.to_json(ctx.clock())})


# ----------------------------------------------------------------------------------------
# Policy


def _policy_json(version: int, document: object, updated_at: str | None) -> dict[str, object]:
    return {"policy": document, "version": version, "updated_at": updated_at}


@_admin
async def get_policy(request: web.Request) -> web.Response:
    record = await context(request).store.policy.get()
    return reply(_policy_json(record.version, record.document, iso(record.updated_at)))


@_action("policy.set")
async def put_policy(request: web.Request) -> web.Response:
    document = await read_json(request)
    if not isinstance(document, dict):
        raise BadRequest('the policy must be a JSON object with "acls" and optionally "tagOwners"')
    record = await context(request).store.policy.set(document)
    request[AUDIT_DETAIL] = f"version {record.version}"
    removed = [r.to_json() for r in record.tags_removed]
    context(request).log.info("policy set", version=record.version, tags_removed=removed)
    body = _policy_json(record.version, record.document, iso(record.updated_at))
    return reply({**body, "tags_removed": removed})


@_action("policy.delete")
async def delete_policy(request: web.Request) -> web.Response:
    record = await context(request).store.policy.set(None)
    context(request).log.info("policy reset to the default", version=record.version)
    return reply(_policy_json(record.version, None, iso(record.updated_at)))


@_admin
async def check_policy(request: web.Request) -> web.Response:
    await context(request).store.policy.check(await read_json(request))
    return reply({"ok": True})


# ----------------------------------------------------------------------------------------
# API keys


@_admin
async def list_api_keys(request: web.Request) -> web.Response:
    ctx = context(request)
    keys = await ctx.store.api_keys.all()
    return reply({"apikeys": [k.to_json(ctx.clock()) for k in keys]})


@_action("apikeys.create")
async def create_api_key(request: web.Request) -> web.Response:
    ctx = context(request)
    body = schemas.fields(
        await read_json(request, empty_ok=True), {}, {"expiration_seconds": schemas.seconds}
    )
    lifetime = body.get("expiration_seconds", ctx.config.api_key_lifetime)
    key, secret = await ctx.store.api_keys.create(ctx.clock() + lifetime)
    context(request).log.info("API key created", key=key.id)
    request[AUDIT_DETAIL] = f"created API key {key.id}"
    return reply({"apikey": {**key.to_json(ctx.clock()), "key": str(secret)}})


@_action("apikeys.expire")
async def expire_api_key(request: web.Request) -> web.Response:
    ctx = context(request)
    schemas.fields(await read_json(request, empty_ok=True), {})
    key = await ctx.store.api_keys.expire(_key_id(request))
    request[AUDIT_DETAIL] = f"expired API key {key.id}"
    return reply({"apikey": key.to_json(ctx.clock())})


# ----------------------------------------------------------------------------------------
# Machine certificates (issued by the operator's CA with `wgpy admin machines issue`)

NO_MACHINE_CA = (
    "the server has no machine CA; start it with --machine-ca CERT (make a CA with "
    "`wgpy admin ca init`)"
)


def _machine_name(request: web.Request) -> str:
    try:
        return machinecert.check_machine_name(request.match_info["name"])
    except machinecert.MachineCertError as e:
        raise BadRequest(str(e)) from None


@_admin
async def list_machines(request: web.Request) -> web.Response:
    ctx = context(request)
    machines = await ctx.store.machines.all()
    now = ctx.clock()
    return reply({"machines": [m.to_json(now) for m in machines]})


@_action("machines.add")
async def add_machine(request: web.Request) -> web.Response:
    """Record a certificate the machine CA issued; refused unless that CA signed it and it is
    a valid machine certificate now."""
    ctx = context(request)
    body = schemas.fields(await read_json(request), {"certificate": schemas.certificate_pem})
    if ctx.machine_ca is None:
        raise Conflict(NO_MACHINE_CA)
    pem = body["certificate"]
    try:
        cert = machinecert.load_certificate(pem.encode(), "the certificate")
        machine = machinecert.check_machine_certificate(ctx.machine_ca, cert, ctx.clock())
    except machinecert.MachineCertError as e:
        raise BadRequest(str(e)) from None
    record = await ctx.store.machines.add(machine, pem)
    ctx.log.info("machine recorded", machine=record.name, serial=record.serial)
    request[AUDIT_DETAIL] = f"machine {record.name} serial {record.serial}"
    return reply({"machine": record.to_json(ctx.clock())})


@_action("machines.revoke")
async def revoke_machine(request: web.Request) -> web.Response:
    ctx = context(request)
    body = schemas.fields(
        await read_json(request, empty_ok=True), {}, {"serial": schemas.certificate_serial}
    )
    name = _machine_name(request)
    records = await ctx.store.machines.revoke(name, body.get("serial"))
    ctx.log.info("machine revoked", machine=name, serial=body.get("serial"))
    serial = body.get("serial")
    request[AUDIT_DETAIL] = f"machine {name}" + (f" serial {serial}" if serial else "")
    now = ctx.clock()
    return reply({"machines": [m.to_json(now) for m in records]})


# ----------------------------------------------------------------------------------------
# The audit log

AUDIT_QUERY = ("limit", "since", "user")


def _since(text: str) -> float:
    """Seconds since the epoch, or an ISO 8601 time (UTC unless it says otherwise)."""
    try:
        return float(text) if re.fullmatch(r"[0-9]{1,12}(\.[0-9]{1,9})?", text) else _iso(text)
    except ValueError:
        raise BadRequest(
            f'"since" must be an ISO 8601 time (2026-12-07T21:00:00Z) or seconds since the '
            f'epoch, not "{text[:40]}"'
        ) from None


def _iso(text: str) -> float:
    moment = datetime.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


@_admin
async def list_audit(request: web.Request) -> web.Response:
    """The newest events (``limit``, default 100, at most MAX_LIST), oldest first; ``since``
    a time, ``user`` one user's."""
    query = request.query
    for name in query:
        if name not in AUDIT_QUERY:
            raise BadRequest(
                f'unknown query parameter "{name[:40]}"; they are "limit", "since" and "user"'
            )
    limit = query.get("limit", "100")
    if not re.fullmatch(r"[0-9]{1,6}", limit) or not 1 <= int(limit) <= MAX_LIST:
        raise BadRequest(f'"limit" must be a number of events from 1 to {MAX_LIST}')
    since = _since(query["since"]) if "since" in query else None
    user = schemas.user_name("user", query["user"]) if "user" in query else None
    events = await context(request).store.audit.list(int(limit), since, user)
    return reply({"events": [e.to_json() for e in events]})


def add_routes(app: web.Application, api: str) -> None:
    r = app.router
    r.add_get(f"{api}/users", list_users)
    r.add_post(f"{api}/users", create_user)
    r.add_delete(f"{api}/users/{{name}}", delete_user)
    r.add_post(f"{api}/users/{{name}}/password", set_password)
    r.add_post(f"{api}/users/{{name}}/totp/reset", reset_totp)
    r.add_post(f"{api}/users/{{name}}/totp/enrol", enrol_totp)
    r.add_get(f"{api}/preauthkeys", list_preauth_keys)
    r.add_post(f"{api}/preauthkeys", create_preauth_key)
    r.add_post(f"{api}/preauthkeys/{{id}}/expire", expire_preauth_key)
    r.add_get(f"{api}/nodes", list_nodes)
    r.add_post(f"{api}/nodes/{{id}}/expire", expire_node)
    r.add_post(f"{api}/nodes/{{id}}/expiry", set_node_expiry)
    r.add_delete(f"{api}/nodes/{{id}}", delete_node)
    r.add_post(f"{api}/nodes/{{id}}/rename", rename_node)
    r.add_post(f"{api}/nodes/{{id}}/tags", tag_node)
    r.add_get(f"{api}/policy", get_policy)
    r.add_put(f"{api}/policy", put_policy)
    r.add_delete(f"{api}/policy", delete_policy)
    r.add_post(f"{api}/policy/check", check_policy)
    r.add_get(f"{api}/apikeys", list_api_keys)
    r.add_post(f"{api}/apikeys", create_api_key)
    r.add_post(f"{api}/apikeys/{{id}}/expire", expire_api_key)
    r.add_get(f"{api}/machines", list_machines)
    r.add_post(f"{api}/machines", add_machine)
    r.add_post(f"{api}/machines/{{name}}/revoke", revoke_machine)
    r.add_get(f"{api}/audit", list_audit)
