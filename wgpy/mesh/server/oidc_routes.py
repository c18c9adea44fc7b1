"""Connecting a device by single sign-on: ``/oidc/start``, ``/oidc/callback`` and the
confirmation (oidc.py decides, oidc_client.py talks to the provider, store/oidc.py keeps the
sign-ins in progress and the users).

1. ``GET /oidc/start?request=ID`` (the "Sign in with SSO" link of ``/login/{id}``): for a
   pending login request, a fresh state, nonce and PKCE verifier are kept server-side, bound
   to this browser by the ``wgpy_oidc`` cookie (HttpOnly, SameSite=Lax, Secure over TLS,
   path /oidc); the browser goes to the provider.
2. ``GET /oidc/callback?code=..&state=..``: the state must be one this browser started and
   not used (else a page says so and nothing changes); the code is exchanged, the ID token
   checked, who may join applied; the account's user is made at its first sign-in (its
   groups kept for the policy); the browser's web session is signed in (method "oidc") and
   asked "Connect DEVICE as USER?".
3. ``POST /oidc/approve/{id}`` (the confirmation's form, single-use token): the request is
   approved for the session's user, and the device is connected.

Every refusal is a page with one sentence (pages.page). No token, code or secret is logged.
"""

from __future__ import annotations

import re

from aiohttp import web

from . import oidc
from .errors import Conflict
from .oidc import OidcError
from .oidc_client import OidcClient, OidcUnavailable
from .pages import (
    PageError,
    connect_device,
    form_token,
    page,
    pending_request,
    render,
    secure_cookies,
    signed_in,
)
from .web import Context, context, rate_limit

COOKIE = "wgpy_oidc"
COOKIE_PATH = "/oidc"
CALLBACK = "/oidc/callback"
_BROWSER = re.compile(r"[A-Za-z0-9_-]{43}\Z")
BROWSER_BYTES = 32

NOT_CONFIGURED = "single sign-on is not set up on this server; sign in with a password"
UNKNOWN_STATE = (
    "this sign-in is not one this browser started, or it was finished or expired already; "
    "open the link that wgpy up printed and sign in again"
)


def _oidc(request: web.Request) -> tuple[Context, OidcClient]:
    ctx = context(request)
    client = ctx.oidc
    if client is None:
        raise PageError(404, NOT_CONFIGURED, "Single sign-on is not set up")
    return ctx, client


def redirect_uri(request: web.Request) -> str:
    """Where the provider sends the browser back: the server's public URL when configured
    (config.public_url), else the scheme and host this browser used; the provider accepts
    only the URIs registered for the client."""
    base = context(request).config.public_url
    if not base:
        base = f"{request.scheme}://{request.host}"
    return str(base).rstrip("/") + CALLBACK


async def _refused(
    ctx: Context, request: web.Request, reason: str, status: int = 403, user: str | None = None
) -> PageError:
    """The page for a refused sign-in, logged and in the audit log (the reason, never a
    code or token)."""
    ctx.log.warning("oidc sign-in refused", reason=reason, user=user, source=request.remote)
    await ctx.store.audit.record(
        "web.signin",
        result="refused",
        method="oidc",
        user=user,
        source=request.remote,
        detail=reason,
    )
    return PageError(status, reason, "Sign-in refused")


@page
async def start(request: web.Request) -> web.StreamResponse:
    """GET /oidc/start?request=ID: off to the identity provider."""
    ctx, client = _oidc(request)
    rate_limit(request)
    login_request = await pending_request(request, request.query.get("request"))
    try:
        metadata = await client.metadata()
    except OidcError as e:
        raise PageError(503, str(e), "Identity provider unavailable") from None
    auth = oidc.new_authorization(ctx.store.oidc.rng)
    browser = request.cookies.get(COOKIE, "")
    if not _BROWSER.match(browser):
        browser = oidc.random_token(ctx.store.oidc.rng, BROWSER_BYTES)
    await ctx.store.oidc.begin(
        auth.state,
        browser,
        login_request.id,
        auth.nonce,
        auth.verifier,
        oidc.LOGIN_LIFETIME,
    )
    location = oidc.authorization_url(metadata, client.settings, redirect_uri(request), auth)
    response = web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})
    response.set_cookie(
        COOKIE,
        browser,
        max_age=int(oidc.LOGIN_LIFETIME),
        path=COOKIE_PATH,
        secure=secure_cookies(request),
        httponly=True,
        samesite="Lax",
    )
    return response


@page
async def callback(request: web.Request) -> web.StreamResponse:
    """GET /oidc/callback: the provider's answer; on success, the confirmation page."""
    ctx, client = _oidc(request)
    state = request.query.get("state", "")
    browser = request.cookies.get(COOKIE, "")
    pending = None
    if state and len(state) <= 128 and _BROWSER.match(browser):
        pending = await ctx.store.oidc.take(state, browser)
    if pending is None:
        raise await _refused(ctx, request, UNKNOWN_STATE, 400)
    error = oidc.callback_error(request.query, client.settings)
    if error is not None:
        raise await _refused(ctx, request, error)
    code = request.query.get("code", "")
    if not code or len(code) > 2048:
        raise await _refused(ctx, request, "the identity provider sent no authorization code", 400)
    login_request = await pending_request(request, pending.request_id)
    try:
        tokens = await client.exchange(code, pending.verifier, redirect_uri(request))
        claims = await client.verify(tokens.get("id_token"), pending.nonce, ctx.clock())
        identity = oidc.identity_of(claims, client.settings)
        reason = oidc.refusal(identity, client.settings)
        if reason is not None:
            raise OidcError(reason)
        name = oidc.user_name_for(identity)
    except OidcUnavailable as e:
        ctx.log.warning("identity provider unavailable", reason=str(e))
        raise PageError(503, str(e), "Identity provider unavailable") from None
    except OidcError as e:
        raise await _refused(ctx, request, str(e)) from None
    try:
        user, created = await ctx.store.oidc.sign_in(
            identity.issuer, identity.subject, name, identity.groups
        )
    except Conflict as e:
        raise await _refused(ctx, request, e.message, 409, name) from None
    if created:
        ctx.log.info("user created at first oidc sign-in", user=user.name, groups=identity.groups)
        await ctx.store.audit.record(
            "users.create",
            result="ok",
            method="oidc",
            user=user.name,
            source=request.remote,
            detail=f"made at the first sign-in of {identity.email or identity.subject}",
        )
    session = await signed_in(request, None, user.name, "oidc")
    action = f"/oidc/approve/{login_request.id}"
    return await render(
        request,
        "confirm.html",
        title="Connect this device?",
        user=session.user,
        action=action,
        csrf=await form_token(request, action),
        hostname=login_request.hostname,
        public_key=login_request.public_key,
    )


@page
async def approve(request: web.Request) -> web.StreamResponse:
    """POST /oidc/approve/{id}: the signed-in user connects the device."""
    return await connect_device(request, "oidc")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/oidc/start", start)
    app.router.add_get(CALLBACK, callback)
    app.router.add_post("/oidc/approve/{id}", approve)
