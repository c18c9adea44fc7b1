"""A man in the middle for the OIDC tests: an aiohttp reverse proxy in front of the real
provider, serving as its issuer (``start_provider(..., issuer=proxy.url)``), that can change
what passes: the authorization request the browser sends, the token request the relying
party sends, and the token answer it gets back.

It lets a test hand the relying party an ID token with a broken signature, or a genuine one
issued to another client (a mix-up), through the same HTTP path a real attacker on the
token path, or a compromised provider, would use. Everything else passes unchanged.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, MultiDict

HOP_BY_HOP = {
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "content-encoding",
}


@dataclass
class Tampering:
    """What the proxy changes; each None: nothing."""

    # the authorization request's query (the browser's GET of the authorization endpoint)
    authorize: Callable[[MultiDict[str]], MultiDict[str]] | None = None
    # the token request: (form, headers) -> (form, headers)
    token_request: (
        Callable[[dict[str, str], dict[str, str]], tuple[dict[str, str], dict[str, str]]] | None
    ) = None
    # the token endpoint's JSON answer
    token_answer: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    seen: list[str] = field(default_factory=list)  # "METHOD PATH" of each request


@dataclass
class Proxy:
    url: str
    upstream: str = ""  # set once the provider runs (it needs url as its issuer first)
    tampering: Tampering = field(default_factory=Tampering)


@asynccontextmanager
async def start_proxy(host: str = "127.0.0.1") -> AsyncIterator[Proxy]:
    sock = socket.socket()
    sock.bind((host, 0))
    proxy = Proxy(f"http://{host}:{sock.getsockname()[1]}")
    session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False)

    async def forward(request: web.Request) -> web.StreamResponse:
        t = proxy.tampering
        t.seen.append(f"{request.method} {request.path}")
        query = MultiDict(request.query)
        if request.path == "/auth" and t.authorize is not None:
            query = t.authorize(query)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["Host"] = request.host  # the provider builds its URLs from it: the proxy's
        body = await request.read()
        token = request.path == "/token" and request.method == "POST"
        if token and t.token_request is not None:
            form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
            form, headers = t.token_request(form, headers)
            body = urlencode(form).encode()
        async with session.request(
            request.method,
            proxy.upstream + request.path,
            params=query,
            data=body or None,
            headers=headers,
            allow_redirects=False,
        ) as upstream:
            data = await upstream.read()
            out = CIMultiDict(
                (k, v) for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP
            )
            if token and upstream.status == 200 and t.token_answer is not None:
                data = json.dumps(t.token_answer(json.loads(data))).encode()
            return web.Response(status=upstream.status, body=data, headers=out)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.SockSite(runner, sock)
    await site.start()
    try:
        yield proxy
    finally:
        await runner.cleanup()
        await session.close()
