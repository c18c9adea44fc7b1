"""The server's HTML pages: what every page shares, and the routes that are not a sign-in
method's own (the stylesheet, sign-out).

Pages are rendered from Jinja2 templates (``templates/``, autoescaped) by :func:`render`;
refusals and errors are :func:`message_page` (one sentence: what went wrong and what to do).
A page handler wrapped in :func:`page` may raise :class:`PageError` or any API error
(errors.py): it becomes a message page with the error's status, never JSON.

Sessions (store/sessions.py) live in the ``wgpy_session`` cookie: HttpOnly, SameSite=Lax,
Secure over TLS or behind a TLS proxy (an https:// public URL), expiring with the session. A
session is made only when a page shows a form (:func:`form_token`). Every POST carries the
token of the form it came from, single use and bound to the session and the form's action
(:func:`read_form`): a missing, reused or foreign token is refused (403) before anything is
changed. :func:`signed_in` replaces the session with a new one signed in as the user.

Route modules for the sign-in methods import this one (and web.py); nothing imports them
back but create_app.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.resources
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import jinja2
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import MultiDict, MultiDictProxy

from .audit import note
from .auth import RateLimiter, source_key
from .errors import MeshError
from .models import EXPIRED, LoginRequest
from .store.login_requests import UNKNOWN, not_pending
from .store.sessions import WebSession
from .web import context

__all__ = [
    "ANONYMOUS_LIFETIME",
    "SESSION_COOKIE",
    "SIGNED_IN_LIFETIME",
    "PageError",
    "add_routes",
    "connect_device",
    "form_token",
    "message_page",
    "page",
    "pending_request",
    "read_form",
    "redirect",
    "render",
    "secure_cookies",
    "session_of",
    "signed_in",
    "signed_out",
]

SESSION_COOKIE = "wgpy_session"
ANONYMOUS_LIFETIME = 30 * 60.0  # seconds a session lives before anyone signs in with it
SIGNED_IN_LIFETIME = 8 * 3600.0  # seconds a signed-in session lives (then sign in again)
STYLESHEET = "/static/wgpy.css"
# New sessions per source (a browser needs one per sign-in; each is a row until it expires):
# a burst of this many, then one every 2 s.
NEW_SESSIONS_BURST = 30.0
NEW_SESSIONS_RATE = 0.5
CSRF_FIELD = "csrf"

# No script, no frames, no other origin: the pages need none of them. The login request's
# id is in the page's URL, so no Referer leaves with it either.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self';"
        " frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_TITLES = {
    400: "That did not work",
    401: "Sign in first",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed",
    408: "Too slow",
    409: "Already done",
    410: "Expired",
    413: "Too large",
    429: "Too many attempts",
    500: "Something went wrong",
    503: "Not available",
}

TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("wgpy.mesh.server", "templates"),
    autoescape=True,  # every template: a user's or device's name is text, never markup
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def as_sentence(text: str) -> str:
    """A message as the API words it ("the code is not right") as a page shows it: "The
    code is not right." """
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".?!" else text + "."


TEMPLATES.filters["sentence"] = as_sentence
_CSS = (
    importlib.resources.files("wgpy.mesh.server")
    .joinpath("templates", "wgpy.css")
    .read_text(encoding="utf-8")
)


class PageError(Exception):
    """A refusal shown as a page: ``status``, a short ``title`` and one ``sentence``;
    ``retry_after`` (seconds) goes out as a Retry-After header."""

    def __init__(
        self,
        status: int,
        sentence: str,
        title: str | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(sentence)
        self.status = status
        self.sentence = sentence
        self.title = title or _TITLES.get(status, "That did not work")
        self.retry_after = retry_after


@dataclass
class _PageState:
    """A request's session as loaded (``loaded``: the cookie was read) and a new cookie to
    set on the response (``cookie``: secret and lifetime; "" to delete it)."""

    session: WebSession | None = None
    loaded: bool = False
    cookie: tuple[str, float] | None = None


_STATE = web.RequestKey("wgpy_page_state", _PageState)
_NEW_SESSIONS = web.AppKey("wgpy_new_sessions", RateLimiter)


def _state(request: web.Request) -> _PageState:
    state = request.get(_STATE)
    if state is None:
        state = request[_STATE] = _PageState()
    return state


async def session_of(request: web.Request) -> WebSession | None:
    """The request's session (from its cookie); None: none, or it expired."""
    state = _state(request)
    if not state.loaded:
        secret = request.cookies.get(SESSION_COOKIE)
        state.session = await context(request).store.sessions.get(secret)
        state.loaded = True
    return state.session


async def _ensure_session(request: web.Request) -> WebSession:
    session = await session_of(request)
    if session is None:
        wait = request.app[_NEW_SESSIONS].take(source_key(request.remote))
        if wait > 0:
            raise PageError(
                429,
                "too many sign-ins were started from this address; "
                f"try again in {math.ceil(wait)} s",
                "Too many attempts",
                retry_after=wait,
            )
        state = _state(request)
        session, secret = await context(request).store.sessions.create(ANONYMOUS_LIFETIME)
        state.session, state.cookie = session, (secret, ANONYMOUS_LIFETIME)
    return session


async def form_token(request: web.Request, action: str) -> str:
    """A single-use token for one form posting to ``action`` (a path); the session is made
    now if the browser has none (its cookie goes with the page)."""
    session = await _ensure_session(request)
    return await context(request).store.sessions.issue_form_token(session, action)


async def read_form(request: web.Request, action: str | None = None) -> MultiDictProxy[str]:
    """The fields of a POSTed form whose token is this session's, unused, for ``action``
    (default: the request's path); PageError 403 otherwise, before anything is changed."""
    ctx = context(request)
    try:
        async with asyncio.timeout(ctx.config.body_timeout):
            form = await request.post()
    except TimeoutError:
        raise PageError(408, "the form took too long to arrive; send it again") from None
    except web.HTTPRequestEntityTooLarge:
        raise PageError(413, "the form is larger than a sign-in form can be") from None
    except (ValueError, LookupError, HttpProcessingError):  # a part's headers, a charset
        raise PageError(400, "the form could not be read; send it from the page") from None
    session = await session_of(request)
    if session is None:
        raise PageError(
            403,
            "your session has expired or this browser does not keep cookies; "
            "open the link again and allow cookies for this site",
            "Session expired",
        )
    token = form.get(CSRF_FIELD)
    if not isinstance(token, str) or not await ctx.store.sessions.take_form_token(
        session, action or request.path, token
    ):
        ctx.log.warning("form refused", path=request.path, source=request.remote)
        raise PageError(
            403,
            "this form was sent already or did not come from this page; "
            "go back, reload the page and try again",
            "Form expired",
        )
    # text fields only: a file in a multipart form is no answer to any of these forms
    return MultiDictProxy(MultiDict((k, v) for k, v in form.items() if isinstance(v, str)))


async def signed_in(
    request: web.Request, response: web.StreamResponse | None, user: str, method: str
) -> WebSession:
    """Sign the browser in as ``user`` (by ``method``: "password", "oidc"): a new session
    replaces the old one (whose data it keeps); its cookie goes on ``response``, or on the
    response render/redirect makes for this request when ``response`` is None."""
    ctx = context(request)
    old = await session_of(request)
    session, secret = await ctx.store.sessions.sign_in(
        None if old is None else old.id, user, method, SIGNED_IN_LIFETIME
    )
    state = _state(request)
    state.session, state.loaded, state.cookie = session, True, (secret, SIGNED_IN_LIFETIME)
    if response is not None:
        _set_cookie(request, response)
    ctx.log.info("signed in on the web", user=user, method=method, source=request.remote)
    return session


async def signed_out(request: web.Request) -> None:
    """Sign the browser out: its session row goes; the response clears the cookie."""
    session = await session_of(request)
    if session is not None:
        await context(request).store.sessions.delete(session.id)
    state = _state(request)
    state.session, state.loaded, state.cookie = None, True, ("", 0.0)


def secure_cookies(request: web.Request) -> bool:
    """Whether cookies get the Secure attribute: over TLS, and behind a proxy that ends TLS
    (the server's public URL is https://), so no browser sends them over plain http://."""
    public_url = context(request).config.public_url or ""
    return request.secure or public_url.lower().startswith("https://")


def _set_cookie(request: web.Request, response: web.StreamResponse) -> None:
    state = _state(request)
    if state.cookie is None:
        return
    secret, lifetime = state.cookie
    if not secret:
        response.del_cookie(
            SESSION_COOKIE,
            path="/",
            secure=secure_cookies(request),
            httponly=True,
            samesite="Lax",
        )
        return
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=int(lifetime),
        path="/",
        secure=secure_cookies(request),
        httponly=True,
        samesite="Lax",
    )


async def render(
    request: web.Request, template: str, status: int = 200, **values: Any
) -> web.Response:
    """The page ``template`` (templates/NAME) with ``values`` (autoescaped), and the session
    cookie if this request made or replaced one. Every page gets ``title`` (default "wgpy"),
    ``signed_in_as`` and a sign-out form's token when signed in."""
    session = await session_of(request)
    values.setdefault("title", "wgpy")
    values["signed_in_as"] = session.user if session is not None else None
    values["signout_csrf"] = (
        await form_token(request, "/logout") if session is not None and session.user else ""
    )
    values["stylesheet"] = STYLESHEET
    body = TEMPLATES.get_template(template).render(**values)
    response = web.Response(
        text=body, status=status, content_type="text/html", charset="utf-8", headers=HEADERS
    )
    _set_cookie(request, response)
    return response


async def message_page(
    request: web.Request, title: str, sentence: str, status: int = 200
) -> web.Response:
    """A page that says one thing: an error, a refusal, or that something is done."""
    return await render(request, "message.html", status, title=title, sentence=sentence)


def redirect(request: web.Request, location: str) -> web.Response:
    """303 to ``location`` (a path on this server), with the session cookie if new."""
    response = web.Response(status=303, headers={**HEADERS, "Location": location})
    _set_cookie(request, response)
    return response


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def page(handler: Handler) -> Handler:
    """A page handler whose refusals are pages: PageError and API errors (with their
    status and sentence) become :func:`message_page`."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except PageError as e:
            response = await message_page(request, e.title, e.sentence, e.status)
            if e.retry_after is not None:
                response.headers["Retry-After"] = str(max(1, math.ceil(e.retry_after)))
            return response
        except MeshError as e:
            title = _TITLES.get(e.status, "That did not work")
            response = await message_page(request, title, e.message, e.status)
            if "Retry-After" in e.headers:
                response.headers["Retry-After"] = e.headers["Retry-After"]
            return response

    return wrapped


# ----------------------------------------------------------------------------------------
# Routes


REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")  # a login request's id in a page's URL


async def pending_request(request: web.Request, request_id: str | None) -> LoginRequest:
    """The login request ``request_id`` names, if it is still pending; a page that says why
    not (404 unknown, 410 expired, 409 closed)."""
    found = None
    if request_id is not None and REQUEST_ID.match(request_id):
        found = await context(request).store.login_requests.get(request_id)
    if found is None:
        raise PageError(404, UNKNOWN, "No such login request")
    if not found.pending:
        if found.state == EXPIRED:
            raise PageError(410, not_pending(found), "Login request expired")
        raise PageError(409, not_pending(found), "Login request closed")
    return found


async def connect_device(request: web.Request, default_method: str) -> web.StreamResponse:
    """The confirm form's POST (``/login/ID/approve``, ``/oidc/approve/ID``): once the form
    token holds, the signed-in user approves the pending login request the URL names
    (store.login_requests.approve, the session's sign-in method), in the audit log either
    way, and sees the connected page."""
    form = await read_form(request)
    session = await session_of(request)
    assert session is not None  # read_form checked it
    if not session.signed_in or session.user_id is None:
        raise PageError(403, "sign in before you connect a device; open the link again")
    if form.get("answer") != "connect":
        raise PageError(400, "choose Connect to connect the device")
    ctx = context(request)
    login_request = await pending_request(request, request.match_info["id"])
    method = session.method or default_method
    try:
        node = await ctx.store.login_requests.approve(login_request.id, session.user_id, method)
    except MeshError as e:  # another user's key, a machine certificate required, ...
        await note(
            request,
            "login.approve",
            result="refused",
            method=method,
            user=session.user,
            detail=e.message,
        )
        raise
    ctx.log.info(
        "login request approved",
        user=session.user,
        method=method,
        node=node.id,
        hostname=node.hostname,
        source=request.remote,
    )
    await note(
        request,
        "login.approve",
        result="ok",
        method=method,
        user=session.user,
        node_id=node.id,
        detail=f"login request for {node.hostname} approved",
    )
    return await render(
        request,
        "connected.html",
        title="Device connected",
        hostname=login_request.hostname,
        name=node.hostname,
        user=node.user,
        addresses=[str(a) for a in node.ip_addresses],
    )


async def stylesheet(request: web.Request) -> web.Response:
    return web.Response(
        text=_CSS,
        content_type="text/css",
        charset="utf-8",
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


@page
async def home(request: web.Request) -> web.StreamResponse:
    """What this server is, and how a device joins (and sign-out when signed in)."""
    server = f"{request.scheme}://{request.host}"
    return await render(request, "home.html", title="wgpy coordination server", server=server)


@page
async def logout_page(request: web.Request) -> web.StreamResponse:
    await read_form(request)
    session = await session_of(request)
    user = None if session is None else session.user
    await signed_out(request)
    context(request).log.info("signed out on the web", user=user, source=request.remote)
    return await message_page(
        request, "Signed out", "you are signed out; close this window or sign in again"
    )


def add_routes(app: web.Application) -> None:
    app[_NEW_SESSIONS] = RateLimiter(NEW_SESSIONS_RATE, NEW_SESSIONS_BURST)
    app.router.add_get("/", home)
    app.router.add_get(STYLESHEET, stylesheet)
    app.router.add_post("/logout", logout_page)
