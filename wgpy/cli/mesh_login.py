"""``wgpy up --login-server URL`` without an auth key: the interactive login, before the
node starts (:mod:`wgpy.cli.mesh`).

A node with no token, or whose token the server refuses (expired, or the node deleted:
checked before the node starts when its key expires or the last run was refused), asks the
server for a login URL, prints it, and waits with a countdown (one line that
counts down on a terminal; a line every half minute otherwise) until a person opens it,
signs in and approves the node, as ``tailscale up`` does. The token it then gets is stored
as a registration with an auth key stores it, and the node starts as usual. Ctrl-C
withdraws the request at the server: nothing is registered, and the exit status is 130.
An expired node logs in with its own key and token, so it keeps its name and addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from wgpy.keys import key_to_base64
from wgpy.machinecert import MachineCertError
from wgpy.mesh.client import daemon
from wgpy.mesh.client.api import ApiError, MeshClientError, NodeClient
from wgpy.mesh.client.login import (
    LoginApproved,
    LoginCancelled,
    LoginStarted,
    interactive_login,
    printable,
)
from wgpy.mesh.client.machine import MachineIdentity
from wgpy.mesh.client.state import EXPIRED, REFUSED, StateDir, StateError
from wgpy.protocol import crypto

from .environment import CommandError, Environment, ExitStatus

TICK = 1.0  # seconds between updates of the countdown on a terminal
CHECK_TIMEOUT = 10.0  # seconds for the server to answer whether the token still works

# What the server's answer to a login with the stored token means for `up`.
TOKEN_OK = "ok"  # or the server did not answer: the node starts and retries as before
TOKEN_EXPIRED = "expired"  # log in again with the node's key and token
TOKEN_REFUSED = "refused"  # unknown token (node deleted, logged out): log in as a new node


def time_left(seconds: float) -> str:
    """``9:58``, ``1:02:03``: minutes and seconds (hours when there are any)."""
    whole = max(0, int(seconds + 0.5))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def worth_checking(node: dict[str, Any] | None, control: dict[str, Any] | None) -> bool:
    """Whether ``up`` should try the stored token before the node starts: for a node whose
    key expires (a person logged it in), one the last run found refused or expired, or one
    that never ran. A node registered with an auth key (no expiry) starts at once, as
    before: its daemon logs in, and says how to log in again if the server refuses it."""
    if control is not None and control.get("state") in (REFUSED, EXPIRED):
        return True
    return node is None or node.get("expires_at") is not None


def token_verdict(error: MeshClientError | None) -> str:
    """What the answer to a login with the stored token means (None: it worked)."""
    if not isinstance(error, ApiError):
        return TOKEN_OK  # it worked, or no answer: the node retries as it always did
    if error.status == 403:
        return TOKEN_EXPIRED
    if error.status == 401:
        return TOKEN_REFUSED
    return TOKEN_OK  # another refusal: the node says it when it logs in


class Countdown:
    """What the person waiting sees: the URL, then the time left. On a terminal one line
    rewritten every second; otherwise a line after each long poll (about every 30 s)."""

    def __init__(
        self, out: TextIO, *, tty: bool, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.out = out
        self.tty = tty
        self.clock = clock
        self.deadline: float | None = None

    def started(self, started: LoginStarted) -> None:
        self.deadline = self.clock() + started.expires_in
        self.out.write(
            f"\nTo log this node in, open this URL in a browser (on any device) and sign "
            f"in:\n\n\t{started.url}\n\n"
        )
        if not self.tty:
            self.out.write(f"[#] waiting for approval ({time_left(started.expires_in)} left)\n")
        self.out.flush()

    def waiting(self, left: float) -> None:
        self.deadline = self.clock() + left
        if not self.tty:
            self.out.write(f"[#] still waiting for approval ({time_left(left)} left)\n")
            self.out.flush()

    def tick(self) -> None:
        if self.tty and self.deadline is not None:
            left = time_left(self.deadline - self.clock())
            self.out.write(f"\r\033[K[#] waiting for approval: {left} left (Ctrl-C cancels)")
            self.out.flush()

    def done(self) -> None:
        if self.tty and self.deadline is not None:
            self.out.write("\r\033[K")
            self.out.flush()

    async def ticking(self) -> None:
        while True:
            self.tick()
            await asyncio.sleep(TICK)


def log_in_if_needed(options: daemon.DaemonOptions, state: StateDir, env: Environment) -> None:
    """Before a node without an auth key starts: log it in interactively if it has no
    token, or if the server refuses its token; store the new token."""
    try:
        private = state.read_key()
        token = state.read_token()
        worth = token is not None and worth_checking(state.read_node(), state.read_control())
    except StateError as e:
        raise CommandError(e.message) from None
    assert private is not None  # prepare_up made it
    public = key_to_base64(crypto.public_key(private))
    node_token = None
    if token is not None:
        if not worth:
            return
        verdict = asyncio.run(_check_token(options, token, public))
        if verdict == TOKEN_OK:
            return
        if verdict == TOKEN_EXPIRED:
            env.stderr.write("[#] this node's key has expired: log in again to renew it\n")
            node_token = token
        else:
            env.stderr.write("[#] the server no longer knows this node's token: log in again\n")
    countdown = Countdown(env.stderr, tty=_isatty(env.stderr))
    try:
        approved = asyncio.run(_log_in(options, public, private, node_token, countdown))
    except LoginCancelled as e:
        countdown.done()
        raise CommandError(
            f"{e.message}; nothing was registered" if e.withdrawn else e.message,
            ExitStatus.INTERRUPTED,
        ) from None
    except MeshClientError as e:
        countdown.done()
        raise CommandError(f"the login did not succeed: {e.message}") from None
    countdown.done()
    try:
        state.write_token(approved.token)
    except StateError as e:
        raise CommandError(e.message) from None
    node = approved.node if isinstance(approved.node, dict) else {}
    said = printable(
        f"node {node.get('hostname')} of user {node.get('user')} "
        f"({node.get('ipv4')}, {node.get('ipv6')})"
    )
    env.stderr.write(f"[#] approved: {said}\n")
    env.stderr.flush()


async def _check_token(options: daemon.DaemonOptions, token: str, public: str) -> str:
    async with NodeClient(
        options.server_url, token=token, ca_cert=options.ca_cert, timeout=CHECK_TIMEOUT
    ) as client:
        try:
            await client.login(public, options.node.hostname)
        except MeshClientError as e:
            return token_verdict(e)
    return token_verdict(None)


async def _log_in(
    options: daemon.DaemonOptions,
    public: str,
    private: bytes,
    node_token: str | None,
    countdown: Countdown,
) -> LoginApproved:
    ticker = asyncio.create_task(countdown.ticking())
    try:
        return await interactive_login(
            options.server_url,
            public,
            private,
            options.node.hostname,
            ca_cert=options.ca_cert,
            node_token=node_token,
            machine=_machine(options),
            on_start=countdown.started,
            on_wait=countdown.waiting,
        )
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker


def _machine(options: daemon.DaemonOptions) -> MachineIdentity | None:
    """The node's machine certificate and key (``--machine-cert/--machine-key``), if any."""
    node = options.node
    if node.machine_cert is None or node.machine_key is None:
        return None
    try:
        return MachineIdentity.load(Path(node.machine_key), Path(node.machine_cert))
    except MachineCertError as e:
        raise CommandError(str(e)) from None


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
