"""The HTTP side of subnet and exit routes: ``POST /api/v1/node/routes`` (a node's advertised
list, which replaces the one before) and the admin's ``GET /api/v1/routes``,
``POST /api/v1/nodes/{id}/routes/approve`` and ``.../revoke`` (``{"routes": [PREFIX, ...]}``;
an empty list revokes all). Checks of the prefixes: routes.py; the store: store/routes.py.
Admin actions are audit events (``nodes.routes.approve``, ``nodes.routes.revoke``)."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from . import schemas
from .admin import ADMIN_KEY, AUDIT_DETAIL, _action, _admin, _node_id
from .errors import BadRequest
from .routes import Prefix, parse_routes
from .web import context, node_of, read_json, reply, report_limit


def _routes(_name: str, value: Any) -> tuple[Prefix, ...]:
    return parse_routes(value)


async def advertise(request: web.Request) -> web.Response:
    """The node's advertised routes, all of them (``{"routes": []}``: none); the node's routes
    as the server keeps them, approved or not."""
    ctx = context(request)
    node = await node_of(request)
    report_limit(request, node)
    body = schemas.fields(await read_json(request), {"routes": _routes})
    routes = await ctx.store.routes.advertise(node.id, body["routes"])
    return reply({"routes": [r.to_json() for r in routes]})


@_admin
async def list_routes(request: web.Request) -> web.Response:
    for name in request.query:
        if name != "node":
            raise BadRequest(f'unknown query parameter "{name[:40]}"; the only one is "node"')
    node = request.query.get("node")
    if node is not None and not re.fullmatch(r"[0-9]{1,18}", node):
        raise BadRequest(f'"{node[:40]}" is not a node id (a number)')
    node_id = None if node is None else int(node)
    routes = await context(request).store.routes.all(node_id)
    return reply({"routes": [r.to_json() for r in routes]})


@_action("nodes.routes.approve")
async def approve(request: web.Request) -> web.Response:
    body = schemas.fields(await read_json(request), {"routes": _routes})
    if not body["routes"]:
        raise BadRequest('"routes" is empty; name the prefixes to approve')
    by = f"admin (API key {request[ADMIN_KEY].id})"
    routes = await context(request).store.routes.approve(_node_id(request), body["routes"], by)
    request[AUDIT_DETAIL] = "approved " + ", ".join(str(p) for p in body["routes"])
    return reply({"routes": [r.to_json() for r in routes]})


@_action("nodes.routes.revoke")
async def revoke(request: web.Request) -> web.Response:
    body = schemas.fields(await read_json(request), {"routes": _routes})
    routes = await context(request).store.routes.revoke(_node_id(request), body["routes"])
    revoked = ", ".join(str(p) for p in body["routes"]) or "all"
    request[AUDIT_DETAIL] = f"revoked {revoked}"
    return reply({"routes": [r.to_json() for r in routes]})


def add_routes(app: web.Application, api: str) -> None:
    app.router.add_post(f"{api}/node/routes", advertise)
    app.router.add_get(f"{api}/routes", list_routes)
    app.router.add_post(f"{api}/nodes/{{id}}/routes/approve", approve)
    app.router.add_post(f"{api}/nodes/{{id}}/routes/revoke", revoke)
