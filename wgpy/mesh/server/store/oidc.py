"""OIDC in the store: the sign-ins in progress (state, nonce, PKCE verifier, bound to one
browser) and the users the identity provider's accounts became, with their groups.

A sign-in's row is found by a hash of its ``state`` and taken (deleted) once, by the browser
whose cookie it was bound to: a forged, unknown, expired or replayed state finds nothing, and
a state shown with another browser's cookie leaves the row as it was. A user is made at an
account's first sign-in and found by (issuer, subject) ever after; a name that an existing
user (with a password, made by an admin, or another account) already has is refused, never
merged. The groups of the last sign-in replace the user's; a change makes the policy's
``group:NAME`` selectors new, so the policy's version moves on and every map follows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..db import IntegrityConflict, Tx
from ..errors import Conflict
from ..models import User
from .rows import USER_COLUMNS, Repository, user_from


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True)
class PendingLogin:
    """An OIDC sign-in between /oidc/start and the callback."""

    request_id: str  # the login request (store.login_requests) it is for
    nonce: str = field(repr=False)
    verifier: str = field(repr=False)
    created_at: float = 0.0
    expires_at: float = 0.0


class OidcRepository(Repository):
    """Sign-ins in progress and OIDC users: each read or write one transaction."""

    async def begin(
        self,
        state: str,
        browser: str,
        request_id: str,
        nonce: str,
        verifier: str,
        lifetime: float,
    ) -> None:
        """Keep a sign-in for ``lifetime`` seconds; those whose time ran out go."""
        now = self.clock()
        async with self.db.transaction() as tx:
            await tx.execute("DELETE FROM oidc_logins WHERE expires_at <= ?", now)
            await tx.execute(
                "INSERT INTO oidc_logins (state_hash, browser_hash, request_id, nonce, verifier,"
                " created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                _hash(state),
                _hash(browser),
                request_id,
                nonce,
                verifier,
                now,
                now + lifetime,
            )

    async def take(self, state: str, browser: str) -> PendingLogin | None:
        """The sign-in of ``state`` started by this ``browser``, removed: None (and nothing
        changed) when there is none, it ran out, or another browser started it."""
        now = self.clock()
        async with self.db.transaction() as tx:
            row = await tx.fetchrow(
                "SELECT browser_hash, request_id, nonce, verifier, created_at, expires_at"
                " FROM oidc_logins WHERE state_hash = ?",
                _hash(state),
            )
            if row is None or row["browser_hash"] != _hash(browser):
                return None
            # the DELETE decides: of two callbacks with the same state at once (a replay to
            # another replica), the one whose DELETE found the row takes it
            taken = await tx.execute("DELETE FROM oidc_logins WHERE state_hash = ?", _hash(state))
            if taken != 1 or row["expires_at"] <= now:
                return None
        return PendingLogin(
            row["request_id"], row["nonce"], row["verifier"], row["created_at"], row["expires_at"]
        )

    async def pending(self) -> int:
        """How many sign-ins are in progress (tests, and the operator's curiosity)."""
        async with self.db.transaction() as tx:
            count = await tx.fetchval("SELECT COUNT(*) FROM oidc_logins")
        return int(count)

    async def sign_in(
        self, issuer: str, subject: str, name: str, groups: Sequence[str]
    ) -> tuple[User, bool]:
        """The user of the account (issuer, subject), made as ``name`` at its first sign-in,
        with ``groups`` as its groups from now on; (user, made now). Conflict with one
        sentence when ``name`` is another user's."""
        now = self.clock()
        try:
            async with self.db.transaction() as tx:
                row = await tx.fetchrow(
                    f"SELECT {USER_COLUMNS} FROM users WHERE oidc_issuer = ? AND oidc_subject = ?",
                    issuer,
                    subject,
                )
                created = row is None
                if row is None:
                    taken = await tx.fetchval("SELECT id FROM users WHERE name = ?", name)
                    if taken is not None:
                        raise _name_taken(name)
                    row = await tx.fetchrow(
                        "INSERT INTO users (name, created_at, oidc_issuer, oidc_subject)"
                        f" VALUES (?, ?, ?, ?) RETURNING {USER_COLUMNS}",
                        name,
                        now,
                        issuer,
                        subject,
                    )
                    assert row is not None
                user = user_from(row)
                await _set_groups(tx, user.id, groups)
        except IntegrityConflict:  # another sign-in took the name at the same moment
            raise _name_taken(name) from None
        return user, created

    async def groups(self, user_name: str) -> tuple[str, ...]:
        async with self.db.transaction() as tx:
            rows = await tx.fetch(
                "SELECT g.name FROM user_groups g JOIN users u ON u.id = g.user_id"
                " WHERE u.name = ? ORDER BY g.name",
                user_name,
            )
        return tuple(r["name"] for r in rows)


def _name_taken(name: str) -> Conflict:
    return Conflict(
        f'there is already a user "{name}" that does not sign in with this account; an admin '
        "must rename or remove that user before this account can join"
    )


async def _set_groups(tx: Tx, user_id: int, groups: Sequence[str]) -> None:
    """Replace the user's groups; when they changed, the policy's version moves on (its
    ``group:NAME`` selectors mean other nodes now)."""
    rows = await tx.fetch("SELECT name FROM user_groups WHERE user_id = ?", user_id)
    old = {r["name"] for r in rows}
    new = set(groups)
    if old == new:
        return
    for name in sorted(old - new):
        await tx.execute("DELETE FROM user_groups WHERE user_id = ? AND name = ?", user_id, name)
    for name in sorted(new - old):
        await tx.execute("INSERT INTO user_groups (user_id, name) VALUES (?, ?)", user_id, name)
    if await tx.execute(
        "UPDATE policy SET version = version + 1 WHERE id = 1 AND document IS NOT NULL"
    ):
        tx.changed(policy=True)
