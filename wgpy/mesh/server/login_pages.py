"""The pages a person opens to connect a device: ``/login/{id}``, the URL ``wgpy up
--login-server`` prints for its login request (store/login_requests.py).

``GET /login/{id}`` shows the device (name and key) and, by the state of the browser's
session, the next step:

1. not signed in: user name and password (and "Sign in with SSO" when OIDC is set up), posted
   to ``/login/{id}``; signin.py decides (lockout messages included);
2. the password passed: the TOTP step, posted to ``/login/{id}/totp``: a code, or first the
   enrolment (a QR code of the otpauth URI, inline SVG, and the key as text) for a user with
   no TOTP yet; a right code signs the session in (pages.signed_in: a new session);
3. signed in: "Connect DEVICE as USER?", posted to ``/login/{id}/approve``, which approves
   the request for the session's user and shows that the device is connected.

Every POST carries its form's single-use token (pages.read_form), checked before anything
else. Which user a step acts for comes from the session only, never from the form.
"""

from __future__ import annotations

import math
from typing import Any

import segno
from aiohttp import web
from markupsafe import Markup

from . import login
from .models import LoginRequest
from .pages import (
    REQUEST_ID,
    PageError,
    connect_device,
    form_token,
    page,
    pending_request,
    read_form,
    redirect,
    render,
    session_of,
    signed_in,
)
from .signin import NO_PASSWORD_STEP, Next, Outcome
from .store.login_requests import UNKNOWN
from .store.sessions import WebSession
from .web import context, signin_of

NAME_SHOWN = 64  # characters of a typed user name shown back on the page


def _paths(request_id: str) -> tuple[str, str, str]:
    """The sign-in, TOTP and approval actions of a login request's pages."""
    base = f"/login/{request_id}"
    return base, f"{base}/totp", f"{base}/approve"


async def _pending(request: web.Request) -> LoginRequest:
    """The login request the URL names, if it is still pending; a page that says why not."""
    return await pending_request(request, request.match_info["id"])


def _sso(request: web.Request, login_request: LoginRequest) -> str | None:
    """Where "Sign in with SSO" goes, when the server has OIDC set up (Context.oidc)."""
    if getattr(context(request), "oidc", None) is None:
        return None
    return f"/oidc/start?request={login_request.id}"


def _device(login_request: LoginRequest) -> dict[str, Any]:
    """What device.html shows."""
    return {"hostname": login_request.hostname, "public_key": login_request.public_key}


def _retry_after(response: web.Response, outcome: Outcome | None) -> web.Response:
    if outcome is not None and outcome.next is Next.REFUSED:
        response.headers["Retry-After"] = str(max(1, math.ceil(outcome.retry_after)))
    return response


async def _sign_in_page(
    request: web.Request,
    login_request: LoginRequest,
    *,
    name: str = "",
    error: str = "",
    status: int = 200,
    outcome: Outcome | None = None,
) -> web.Response:
    action, _, _ = _paths(login_request.id)
    response = await render(
        request,
        "login.html",
        status,
        title="Sign in to connect a device",
        action=action,
        csrf=await form_token(request, action),
        name=name[:NAME_SHOWN],
        error=error,
        sso=_sso(request, login_request),
        **_device(login_request),
    )
    return _retry_after(response, outcome)


async def _totp_page(
    request: web.Request,
    login_request: LoginRequest,
    user: str,
    *,
    error: str = "",
    status: int = 200,
    outcome: Outcome | None = None,
) -> web.Response:
    """The code step; for a user whose enrolment is not confirmed yet, with its key and QR
    code (the session passed the password step for this user)."""
    _, action, _ = _paths(login_request.id)
    account = await context(request).store.accounts.get(user)
    enrolment = None
    if (
        account is not None
        and account.totp_secret is not None
        and not account.totp_confirmed
        and signin_of(context(request)).enrol_on_sign_in
    ):
        uri = login.totp_uri(account.totp_secret, user, signin_of(context(request)).issuer)
        svg = segno.make(uri, error="m").svg_inline(
            scale=4, border=2, dark="#000", light="#fff", omitsize=True
        )
        enrolment = {"secret": account.totp_secret, "qr": Markup(svg)}
    response = await render(
        request,
        "totp.html",
        status,
        title="Set up your authenticator" if enrolment else "Enter your code",
        user=user,
        action=action,
        csrf=await form_token(request, action),
        error=error,
        enrolment=enrolment,
        **_device(login_request),
    )
    return _retry_after(response, outcome)


async def _confirm_page(
    request: web.Request, login_request: LoginRequest, session: WebSession
) -> web.Response:
    _, _, action = _paths(login_request.id)
    return await render(
        request,
        "confirm.html",
        title="Connect this device?",
        user=session.user,
        action=action,
        csrf=await form_token(request, action),
        **_device(login_request),
    )


@page
async def login_page(request: web.Request) -> web.StreamResponse:
    """GET /login/{id}: the step this browser's session is at."""
    login_request = await _pending(request)
    session = await session_of(request)
    if session is not None and session.signed_in:
        return await _confirm_page(request, login_request, session)
    if session is not None and session.pending_user is not None:
        return await _totp_page(request, login_request, session.pending_user)
    return await _sign_in_page(request, login_request)


@page
async def password_step(request: web.Request) -> web.StreamResponse:
    """POST /login/{id}: user name and password."""
    form = await read_form(request)
    login_request = await _pending(request)
    session = await session_of(request)
    assert session is not None  # read_form checked it
    ctx = context(request)
    name = form.get("name", "")
    outcome = await signin_of(ctx).check_password(name, form.get("password", ""), request.remote)
    if outcome.next in (Next.FAILED, Next.REFUSED):
        await ctx.store.sessions.set_pending(session.id, None)
        ctx.log.info(
            "web sign-in refused", step="password", user=outcome.user, source=request.remote
        )
        status = 429 if outcome.next is Next.REFUSED else 401
        return await _sign_in_page(
            request, login_request, name=name, error=outcome.message, status=status, outcome=outcome
        )
    if outcome.next is Next.ENROL:
        await signin_of(ctx).begin_enrolment(outcome.user)  # None: enrolled meanwhile
    await ctx.store.sessions.set_pending(session.id, outcome.user)
    return await _totp_page(request, login_request, outcome.user)


@page
async def totp_step(request: web.Request) -> web.StreamResponse:
    """POST /login/{id}/totp: the code of the user who passed the password step in this
    session."""
    form = await read_form(request)
    login_request = await _pending(request)
    session = await session_of(request)
    assert session is not None
    user = session.pending_user
    if user is None:
        return await _sign_in_page(request, login_request, error=NO_PASSWORD_STEP, status=403)
    ctx = context(request)
    outcome = await signin_of(ctx).check_totp(user, form.get("code", ""), request.remote)
    if outcome.next is Next.SIGNED_IN:
        signed = await signed_in(request, None, user, "password")
        return await _confirm_page(request, login_request, signed)
    ctx.log.info("web sign-in refused", step="totp", user=user, source=request.remote)
    status = 429 if outcome.next is Next.REFUSED else 401
    return await _totp_page(
        request, login_request, user, error=outcome.message, status=status, outcome=outcome
    )


@page
async def approve(request: web.Request) -> web.StreamResponse:
    """POST /login/{id}/approve: the signed-in user connects the device."""
    return await connect_device(request, "password")


@page
async def back_to_the_page(request: web.Request) -> web.StreamResponse:
    """GET of a step's form action (a bookmark, a reload of a result): the page itself."""
    request_id = request.match_info["id"]
    if not REQUEST_ID.match(request_id):
        raise PageError(404, UNKNOWN, "No such login request")
    return redirect(request, f"/login/{request_id}")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/login/{id}", login_page)
    app.router.add_get("/login/{id}/totp", back_to_the_page)
    app.router.add_get("/login/{id}/approve", back_to_the_page)
    app.router.add_post("/login/{id}", password_step)
    app.router.add_post("/login/{id}/totp", totp_step)
    app.router.add_post("/login/{id}/approve", approve)
