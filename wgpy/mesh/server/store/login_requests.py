"""Login requests in the store: a node that has no auth key asks to join (``wgpy up
--login-server``), a person signs in (password, OIDC) or an admin approves, and the node
fetches its token once.

``create`` gives the request's id (the path part of the URL the person opens) and a secret
only the waiting node holds (the store keeps its SHA-256). ``approve`` registers the node of
the request's key for the user who signed in, in one transaction with the request's change of
state, so a request is approved once or not at all, and a concurrent cancel either comes first
(nothing registered) or finds it approved. The node's token is made when the node takes it
(``take_token``), so no usable token is ever stored.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import time
from collections.abc import Callable

from ..auth import Credential, Rng, hash_secret, secret_matches
from ..config import DEFAULT_KEY_EXPIRY, DEFAULT_LOGIN_LIFETIME
from ..db import Database, IntegrityConflict, Row, Tx
from ..errors import BadRequest, Conflict, NotFound, Unauthorized, Unavailable
from ..models import (
    APPROVED,
    CANCELLED,
    EXPIRED,
    LOGIN_METHODS,
    PENDING,
    REFUSED,
    LoginRequest,
    MachineRecord,
    Node,
)
from .nodes import ATTEMPTS, NodeRepository
from .rows import NODES_FROM, Repository, node_from

ID_BYTES = 16  # 128 bits: the id is all an attacker who does not see the URL could guess
SECRET_BYTES = 32
MESSAGE_MAX = 500
PRUNE_AFTER = 86400.0  # seconds after its expiry a request is deleted
MAX_PENDING = 10_000

UNKNOWN = "there is no such login request (mistyped, or expired long ago); run wgpy up again"
WRONG_SECRET = "this login request's secret does not match; run wgpy up again"

COLUMNS = (
    "r.id, r.secret_hash, r.public_key, r.hostname, r.state, r.message, u.name AS user_name,"
    " r.method, r.node_id, r.machine_id, r.created_node, r.token_taken, r.created_at,"
    " r.expires_at, r.decided_at"
)
FROM = f"SELECT {COLUMNS} FROM login_requests r LEFT JOIN users u ON u.id = r.user_id"


def _random(rng_bytes: bytes) -> str:
    return base64.urlsafe_b64encode(rng_bytes).rstrip(b"=").decode("ascii")


def request_from(row: Row, now: float) -> LoginRequest:
    state = row["state"]
    if state == PENDING and row["expires_at"] <= now:
        state = EXPIRED
    return LoginRequest(
        id=row["id"],
        public_key=row["public_key"],
        hostname=row["hostname"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        state=state,
        user=row["user_name"],
        method=row["method"],
        node_id=None if row["node_id"] is None else int(row["node_id"]),
        machine_id=None if row["machine_id"] is None else int(row["machine_id"]),
        message=row["message"],
        decided_at=row["decided_at"],
        token_taken=bool(row["token_taken"]),
    )


def not_pending(request: LoginRequest) -> str:
    """Why a request that is not pending cannot be approved, refused or cancelled."""
    if request.state == EXPIRED:
        return "this login request has expired; run wgpy up on the device again for a new one"
    if request.state == APPROVED:
        return f'this login request was already approved (for user "{request.user}")'
    if request.state == REFUSED:
        return "this login request was refused; run wgpy up on the device again for a new one"
    return "this login request was cancelled on the device; run wgpy up there again"


class LoginRequestRepository(Repository):
    """Login requests: each read or write one transaction. ``key_expiry`` (seconds, None:
    never) and ``max_nodes`` (per user, 0: no limit) are the server's settings, which
    ``approve`` applies."""

    key_expiry: float | None = DEFAULT_KEY_EXPIRY
    max_nodes: int = 0
    # Requests waiting at once, from everyone: each start is rate limited per source, and
    # this bounds what many sources together can make the database hold.
    max_pending: int = MAX_PENDING

    def __init__(
        self,
        db: Database,
        *,
        nodes: NodeRepository,
        clock: Callable[[], float] = time.time,
        rng: Rng = os.urandom,
    ) -> None:
        super().__init__(db, clock=clock, rng=rng)
        self.nodes = nodes
        # requests that nodes wait on in this process: an event and how many wait on it
        self._waiting: dict[str, tuple[asyncio.Event, int]] = {}

    async def wait_decided(self, request_id: str, timeout: float) -> None:
        """Return when a request is decided in this process (approved, refused, cancelled)
        or after ``timeout`` seconds, whichever is first. Other replicas' decisions are not
        heard: a waiter reads the request again after each return."""
        event, count = self._waiting.get(request_id, (asyncio.Event(), 0))
        self._waiting[request_id] = (event, count + 1)
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            entry = self._waiting.get(request_id)
            if entry is not None and entry[0] is event:
                if entry[1] <= 1:
                    del self._waiting[request_id]
                else:
                    self._waiting[request_id] = (event, entry[1] - 1)

    def waiting(self) -> int:
        """How many requests nodes wait on in this process."""
        return len(self._waiting)

    def _notify(self, request_id: str) -> None:
        entry = self._waiting.pop(request_id, None)
        if entry is not None:
            entry[0].set()

    async def create(
        self,
        public_key: str,
        hostname: str,
        *,
        node_token: Credential | None = None,
        machine: MachineRecord | None = None,
        lifetime: float = DEFAULT_LOGIN_LIFETIME,
    ) -> tuple[LoginRequest, str]:
        """A pending request for ``public_key``, and the secret the node waits with (shown
        once). ``node_token``: the token of the node logging in again (valid even if the node
        expired), so approval keeps that node even if the key changed."""
        if lifetime <= 0:
            raise ValueError("a login request needs a positive lifetime")
        now = self.clock()
        request_id = self.rng(ID_BYTES).hex()  # hex: never starts with "-" (argparse)
        secret = _random(self.rng(SECRET_BYTES))
        async with self.db.transaction() as tx:
            held = None
            if node_token is not None:
                row = await tx.fetchrow(
                    "SELECT id, token_hash FROM nodes WHERE token_id = ?", node_token.id
                )
                if row is None or not secret_matches(node_token, row["token_hash"]):
                    raise Unauthorized(
                        "the node token is not valid (unknown, logged out, or the node was "
                        "deleted); log in without it"
                    )
                held = int(row["id"])
            waiting = await tx.fetchval(
                "SELECT COUNT(*) FROM login_requests WHERE state = ? AND expires_at > ?",
                PENDING,
                now,
            )
            if int(waiting) >= self.max_pending:
                raise Unavailable(
                    f"{waiting} login requests are waiting for approval, the most this server "
                    "takes; try again in a few minutes"
                )
            await tx.execute(
                "INSERT INTO login_requests (id, secret_hash, public_key, hostname, state,"
                " node_id, machine_id, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                request_id,
                hash_secret(secret),
                public_key,
                hostname,
                PENDING,
                held,
                None if machine is None else machine.id,
                now,
                now + lifetime,
            )
            request = await self._get(tx, request_id, now)
        assert request is not None
        return request, secret

    async def get(self, request_id: str) -> LoginRequest | None:
        """The request (a pending one past its expiry reads as expired); None if unknown."""
        now = self.clock()
        async with self.db.transaction() as tx:
            return await self._get(tx, request_id, now)

    async def authenticate(self, request_id: str, secret: str) -> LoginRequest:
        """The request, if ``secret`` is its secret; Unauthorized otherwise."""
        now = self.clock()
        async with self.db.transaction() as tx:
            row = await tx.fetchrow(f"{FROM} WHERE r.id = ?", request_id)
        return self._checked(row, secret, now)

    async def all(self, *, pending_only: bool = True) -> list[LoginRequest]:
        """The requests still waiting (or all that are kept), oldest first."""
        now = self.clock()
        async with self.db.transaction() as tx:
            if pending_only:
                rows = await tx.fetch(
                    f"{FROM} WHERE r.state = ? AND r.expires_at > ? ORDER BY r.created_at",
                    PENDING,
                    now,
                )
            else:
                rows = await tx.fetch(f"{FROM} ORDER BY r.created_at")
        return [request_from(r, now) for r in rows]

    async def approve(self, request_id: str, user_id: int, method: str) -> Node:
        """Register the request's node for ``user_id`` (see nodes.approve_in: the key's or
        the proved node stays the same node; else a new one), expiring ``key_expiry`` from
        now; the node. The node takes its token with :meth:`take_token`."""
        if method not in LOGIN_METHODS:
            raise ValueError(f"unknown login method {method!r}")
        for _ in range(ATTEMPTS):
            try:
                node = await self._approve(request_id, user_id, method)
            except IntegrityConflict:
                continue  # a concurrent registration took the hostname or address first
            self._notify(request_id)
            return node
        raise Conflict("the approval kept colliding with concurrent registrations; try again")

    async def _approve(self, request_id: str, user_id: int, method: str) -> Node:
        now = self.clock()
        expires_at = None if self.key_expiry is None else now + self.key_expiry
        async with self.db.transaction() as tx:
            request = await self._pending(tx, request_id, now)
            if await tx.fetchval("SELECT id FROM users WHERE id = ?", user_id) is None:
                raise NotFound(f"there is no user with id {user_id}")
            node_id, created = await self.nodes.approve_in(
                tx,
                user_id,
                request.public_key,
                request.hostname,
                held=request.node_id,
                expires_at=expires_at,
                max_nodes=self.max_nodes,
                machine_id=request.machine_id,
            )
            await self._decide(
                tx,
                request_id,
                "state = ?, user_id = ?, method = ?, node_id = ?, created_node = ?",
                APPROVED,
                user_id,
                method,
                node_id,
                created,
            )
            node = await tx.fetchrow(f"{NODES_FROM} WHERE n.id = ?", node_id)
        assert node is not None
        return node_from(node)

    async def take_token(self, request_id: str, secret: str) -> tuple[LoginRequest, Credential]:
        """For the waiting node of an approved request: the request and the node's new token,
        the first time only (Conflict after). Unauthorized with a wrong secret."""
        now = self.clock()
        async with self.db.transaction() as tx:
            row = await tx.fetchrow(f"{FROM} WHERE r.id = ?", request_id)
            request = self._checked(row, secret, now)
            if request.state != APPROVED or request.node_id is None:
                raise Conflict(f"this login request is {request.state}, not approved")
            taken = await tx.execute(
                "UPDATE login_requests SET token_taken = TRUE"
                " WHERE id = ? AND state = ? AND NOT token_taken",
                request_id,
                APPROVED,
            )
            if not taken:
                raise Conflict("this login request's token was already fetched; run wgpy up again")
            token = await self.nodes.give_token_in(tx, request.node_id)
            fresh = await self._get(tx, request_id, now)
        assert fresh is not None
        return fresh, token

    async def refuse(self, request_id: str, message: str) -> LoginRequest:
        """Refuse a pending request; the node hears ``message`` (one sentence)."""
        message = "".join(c for c in message if c.isprintable()).strip()[:MESSAGE_MAX]
        if not message:
            raise BadRequest("say why the login request is refused")
        now = self.clock()
        async with self.db.transaction() as tx:
            await self._pending(tx, request_id, now)
            await self._decide(tx, request_id, "state = ?, message = ?", REFUSED, message)
            request = await self._get(tx, request_id, now)
        assert request is not None
        self._notify(request_id)
        return request

    async def cancel(self, request_id: str) -> LoginRequest:
        """The node gave up: a pending request is cancelled. One approved but whose token the
        node never took is cancelled too, and the node its approval made is deleted again
        (a re-approved existing node stays as approved). Cancelling again changes nothing.

        The state changes only from the state read (a conditional UPDATE): an approval that
        commits in between makes it read again, so the node that approval made is deleted."""
        for _ in range(ATTEMPTS):
            now = self.clock()
            async with self.db.transaction() as tx:
                row = await tx.fetchrow(f"{FROM} WHERE r.id = ?", request_id)
                if row is None:
                    raise NotFound(UNKNOWN)
                request = request_from(row, now)
                if request.state == APPROVED and request.token_taken:
                    raise Conflict(
                        "this login request was approved and the device took its token; log "
                        "the node out (wgpy logout) instead"
                    )
                if request.state not in (PENDING, APPROVED):
                    return request
                if not await tx.execute(
                    "UPDATE login_requests SET state = ?, decided_at = ?"
                    " WHERE id = ? AND state = ? AND NOT token_taken",
                    CANCELLED,
                    now,
                    request_id,
                    row["state"],
                ):
                    continue  # decided meanwhile: read it again
                if request.state == APPROVED and row["created_node"] and request.node_id:
                    await tx.execute("DELETE FROM nodes WHERE id = ?", request.node_id)
                    tx.changed([request.node_id])
                cancelled = await self._get(tx, request_id, now)
            assert cancelled is not None
            self._notify(request_id)
            return cancelled
        raise Conflict("the login request kept changing while it was cancelled; try again")

    async def prune(self) -> int:
        """Delete requests that expired over a day ago; how many."""
        async with self.db.transaction() as tx:
            return await tx.execute(
                "DELETE FROM login_requests WHERE expires_at < ?", self.clock() - PRUNE_AFTER
            )

    # ------------------------------------------------------------------------------------

    async def _get(self, tx: Tx, request_id: str, now: float) -> LoginRequest | None:
        row = await tx.fetchrow(f"{FROM} WHERE r.id = ?", request_id)
        return None if row is None else request_from(row, now)

    async def _pending(self, tx: Tx, request_id: str, now: float) -> LoginRequest:
        request = await self._get(tx, request_id, now)
        if request is None:
            raise NotFound(UNKNOWN)
        if not request.pending:
            raise Conflict(not_pending(request))
        return request

    async def _decide(self, tx: Tx, request_id: str, assignments: str, *values: object) -> None:
        """Decide a pending request: the UPDATE matches only while it is still pending, so
        of two concurrent decisions one fails here and its transaction rolls back."""
        decided = await tx.execute(
            f"UPDATE login_requests SET {assignments}, decided_at = ?"
            " WHERE id = ? AND state = ? AND expires_at > ?",
            *values,
            self.clock(),
            request_id,
            PENDING,
            self.clock(),
        )
        if not decided:
            current = await self._get(tx, request_id, self.clock())
            raise Conflict(not_pending(current) if current else UNKNOWN)

    @staticmethod
    def _checked(row: Row | None, secret: str, now: float) -> LoginRequest:
        if row is None:
            raise Unauthorized(UNKNOWN)
        if not secrets.compare_digest(hash_secret(_ascii(secret)), row["secret_hash"]):
            raise Unauthorized(WRONG_SECRET)
        return request_from(row, now)


def _ascii(text: str) -> str:
    """``text`` if ASCII, else something no secret hashes to (hash_secret takes ASCII)."""
    return text if text.isascii() else "\0"
