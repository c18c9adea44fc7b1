"""Interactive login, the node's side (docs/mesh-api.md, "Login requests"): ask the server
for a login URL, let a person open it, wait until they approved it, and take the node token,
which the server sealed to this node's WireGuard public key (only the private key opens it).

:func:`interactive_login` does it all; what the person sees (the URL, a countdown) is the
caller's, through ``on_start`` and ``on_wait``. Cancelling the task that runs it (Ctrl-C)
withdraws the request at the server before it ends, so nothing stays registered.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, SealedBox

from wgpy.log import get_logger

from .api import ApiError, Client, MeshClientError
from .machine import MachineIdentity

WAIT = 30  # seconds one long poll may last (the server's most)
CANCEL_TIMEOUT = 5.0  # seconds to withdraw the request when cancelled
REQUEST_TIMEOUT = WAIT + 15.0  # seconds for one request: a long poll plus a margin
NO_INTERACTIVE_LOGIN = (
    "this server does not offer interactive login (a wgpy server before it); give a pre-auth "
    "key with --auth-key"
)

log = get_logger(component="login")


@dataclass(frozen=True)
class LoginStarted:
    """A login request the server made: open ``url`` within ``expires_in`` seconds."""

    id: str
    url: str
    expires_in: int
    secret: str = field(repr=False)


@dataclass(frozen=True)
class LoginApproved:
    node: Any  # the node's record, as the server describes it
    token: str = field(repr=False)


class LoginEnded(MeshClientError):
    """The request ended without approval (refused, cancelled, expired); ``state`` says
    which, the message says it in a sentence."""

    def __init__(self, state: str, message: str) -> None:
        super().__init__(message)
        self.state = state


class LoginCancelled(MeshClientError):
    """The wait was cancelled (Ctrl-C); the message says whether the request was withdrawn."""

    def __init__(self, message: str, *, withdrawn: bool) -> None:
        super().__init__(message)
        self.withdrawn = withdrawn


def unseal(sealed: str, private_key: bytes) -> str:
    """The node token in a sealed box to this node's key; ValueError if it does not open."""
    try:
        box = SealedBox(PrivateKey(private_key))
        token = box.decrypt(base64.b64decode(sealed, validate=True)).decode("ascii")
    except (CryptoError, binascii.Error, UnicodeDecodeError, TypeError) as e:
        raise ValueError(f"the sealed node token does not open with this node's key ({e})") from e
    return token


def parse_started(reply: Any) -> LoginStarted:
    try:
        started = LoginStarted(
            id=str(reply["id"]),
            url=str(reply["url"]),
            expires_in=int(reply["expires_in"]),
            secret=str(reply["secret"]),
        )
    except (KeyError, TypeError, ValueError):
        raise ApiError(200, "the server's answer to the login request is unusable") from None
    if not started.url.startswith(("http://", "https://")) or not _plain(started.url):
        raise ApiError(200, "the server's login URL is not an http(s) URL")
    return started


def _plain(text: str) -> bool:
    """Printable, no spaces: nothing that a terminal would take as a control sequence."""
    return text.isprintable() and not any(c.isspace() for c in text)


def printable(text: str) -> str:
    """``text`` from the server with what is not printable left out (a terminal shows it)."""
    return "".join(c for c in text if c.isprintable())


class LoginClient(Client):
    """The login endpoints; ``token`` is the node token when starting (if the node has one),
    then the request's secret."""

    async def start(
        self, public_key: str, hostname: str, proof: dict[str, str] | None = None
    ) -> LoginStarted:
        """``proof``: the machine proof's fields (MachineIdentity.proof), if the node has a
        machine certificate."""
        body = {"public_key": public_key, "hostname": hostname, **(proof or {})}
        try:
            reply = await self.request("POST", "/api/v1/login/start", body)
        except ApiError as e:
            if e.status in (404, 405):  # no such endpoint: a server without interactive login
                raise ApiError(e.status, NO_INTERACTIVE_LOGIN) from None
            raise
        started = parse_started(reply)
        self.token = started.secret
        return started

    async def wait(self, request_id: str, timeout: int = WAIT) -> dict[str, Any]:
        reply = await self.request(
            "GET", f"/api/v1/login/{request_id}/wait", params={"timeout": str(timeout)}
        )
        if not isinstance(reply, dict) or not isinstance(reply.get("state"), str):
            raise ApiError(200, "the server's answer to the login wait is unusable")
        return reply

    async def cancel(self, request_id: str) -> None:
        await self.request("DELETE", f"/api/v1/login/{request_id}")


async def interactive_login(
    base_url: str,
    public_key: str,
    private_key: bytes,
    hostname: str,
    *,
    ca_cert: str | None = None,
    node_token: str | None = None,
    machine: MachineIdentity | None = None,
    on_start: Callable[[LoginStarted], None] = lambda _: None,
    on_wait: Callable[[float], None] = lambda _: None,
    clock: Callable[[], float] = time.monotonic,
) -> LoginApproved:
    """Start a login request, hand it to ``on_start`` (show the URL), wait until it is
    approved (``on_wait`` hears the seconds left after each long poll) and return the node
    and its token. LoginEnded if it was refused or expired; LoginCancelled if this task was
    cancelled (the request withdrawn at the server first). ``machine``: the node's machine
    certificate and key, proved to the server with the request."""
    async with LoginClient(
        base_url, token=node_token, ca_cert=ca_cert, timeout=REQUEST_TIMEOUT
    ) as client:
        proof = None
        if machine is not None:
            proof = await machine.proof(client, base64.b64decode(public_key))
        started = await client.start(public_key, hostname, proof)
        log.info("login request started", url=started.url, expires_in=started.expires_in)
        on_start(started)
        deadline = clock() + started.expires_in
        try:
            while True:
                left = deadline - clock()
                reply = await client.wait(started.id, max(1, min(WAIT, round(left) + 1)))
                state = reply["state"]
                if state == "approved":
                    break
                if state != "pending":
                    message = str(reply.get("message") or f"the login is {state}")
                    raise LoginEnded(printable(state), printable(message))
                expires_in = reply.get("expires_in")
                if isinstance(expires_in, int | float) and not isinstance(expires_in, bool):
                    deadline = clock() + expires_in
                on_wait(max(0.0, deadline - clock()))
        except asyncio.CancelledError:
            raise await _withdraw(client, started) from None
        try:
            token = unseal(str(reply.get("sealed_token")), private_key)
        except ValueError as e:
            raise ApiError(200, str(e)) from None
        return LoginApproved(reply.get("node"), token)


async def _withdraw(client: LoginClient, started: LoginStarted) -> LoginCancelled:
    """Withdraw the request after a cancel: what to raise in its place."""
    try:
        async with asyncio.timeout(CANCEL_TIMEOUT):
            await client.cancel(started.id)
    except (MeshClientError, TimeoutError) as e:
        reason = e.message if isinstance(e, MeshClientError) else "the server did not answer"
        log.warning("login request not withdrawn", reason=reason)
        return LoginCancelled(
            f"cancelled, but the server was not told ({reason}); the login URL stops working "
            f"by itself within {started.expires_in} s",
            withdrawn=False,
        )
    log.info("login request withdrawn")
    return LoginCancelled("cancelled: the login request was withdrawn", withdrawn=True)
