"""Web sessions of the sign-in pages (``web_sessions``) and their single-use form tokens
(``web_form_tokens``).

A browser holds a session's secret in a cookie; the database keeps only its SHA-256 (the
session's ``id``), so a leaked database holds no usable cookie. A session starts anonymous,
may record who passed the password step (``pending_user``, owing a TOTP code), and is
replaced by a new one when someone signs in (:meth:`SessionRepository.sign_in`: a cookie
planted before the sign-in is worth nothing after it). An expired session reads as none and
its row goes.

Every form a page shows carries a token of its own, stored as a hash with the session and the
form's action; a POST takes it (:meth:`SessionRepository.take_form_token`: one statement, so
a token is accepted once, whichever replica sees it first).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from ..db import Row, Tx
from .rows import Repository, user_id_of

SECRET_BYTES = 32
FORMS_PER_SESSION = 32  # the newest form tokens a session keeps; older ones are refused
_SECRET = re.compile(r"[A-Za-z0-9_-]{43}\Z")


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


@dataclass(frozen=True)
class WebSession:
    """One browser's session; ``id`` is the hash of its cookie, never the cookie."""

    id: str = field(repr=False)
    user_id: int | None
    user: str | None  # signed in as (None: not signed in)
    method: str | None  # how: "password", "oidc"
    pending_user: str | None  # passed the password step, owes a TOTP code
    data: dict[str, Any] = field(compare=False)  # what the pages keep between steps
    created_at: float
    signed_in_at: float | None
    expires_at: float

    @property
    def signed_in(self) -> bool:
        return self.user is not None


_COLUMNS = (
    "s.id, s.user_id, u.name AS user_name, s.method, s.pending_user, s.data, s.created_at,"
    " s.signed_in_at, s.expires_at"
)
_SELECT = f"SELECT {_COLUMNS} FROM web_sessions s LEFT JOIN users u ON u.id = s.user_id"


def _session_from(row: Row) -> WebSession:
    data: Any = json.loads(row["data"])
    return WebSession(
        id=row["id"],
        user_id=None if row["user_id"] is None else int(row["user_id"]),
        user=row["user_name"],
        method=row["method"],
        pending_user=row["pending_user"],
        data=data if isinstance(data, dict) else {},
        created_at=float(row["created_at"]),
        signed_in_at=None if row["signed_in_at"] is None else float(row["signed_in_at"]),
        expires_at=float(row["expires_at"]),
    )


class SessionRepository(Repository):
    """Web sessions and form tokens."""

    def _secret(self) -> str:
        return base64.urlsafe_b64encode(self.rng(SECRET_BYTES)).rstrip(b"=").decode("ascii")

    async def create(self, lifetime: float) -> tuple[WebSession, str]:
        """A new anonymous session for ``lifetime`` seconds, and the secret for its cookie
        (shown to the browser once, never stored). Expired sessions are deleted here."""
        now = self.clock()
        secret = self._secret()
        async with self.db.transaction() as tx:
            await tx.execute("DELETE FROM web_sessions WHERE expires_at <= ?", now)
            await _insert(tx, hash_secret(secret), None, None, {}, now, None, now + lifetime)
            session = await _get(tx, hash_secret(secret))
        assert session is not None
        return session, secret

    async def get(self, secret: str | None) -> WebSession | None:
        """The session whose cookie holds ``secret``; None when there is none, the cookie
        is malformed, or the session expired (its row is deleted then)."""
        if secret is None or not _SECRET.match(secret):
            return None
        session_id = hash_secret(secret)
        async with self.db.transaction() as tx:
            session = await _get(tx, session_id)
            if session is not None and session.expires_at <= self.clock():
                await tx.execute("DELETE FROM web_sessions WHERE id = ?", session_id)
                return None
        return session

    async def set_pending(self, session_id: str, user: str | None) -> bool:
        """Record that ``user`` passed the password step in this session (None: forget it);
        False when the session is gone."""
        async with self.db.transaction() as tx:
            changed = await tx.execute(
                "UPDATE web_sessions SET pending_user = ? WHERE id = ? AND expires_at > ?",
                user,
                session_id,
                self.clock(),
            )
        return changed == 1

    async def set_data(self, session_id: str, data: dict[str, Any]) -> bool:
        """Replace what the pages keep in this session (JSON; never a secret)."""
        async with self.db.transaction() as tx:
            changed = await tx.execute(
                "UPDATE web_sessions SET data = ? WHERE id = ? AND expires_at > ?",
                json.dumps(data),
                session_id,
                self.clock(),
            )
        return changed == 1

    async def sign_in(
        self, session_id: str | None, user: str, method: str, lifetime: float
    ) -> tuple[WebSession, str]:
        """A new session signed in as ``user`` (by ``method``) for ``lifetime`` seconds,
        replacing ``session_id`` (its data carried over, its row and form tokens deleted),
        and the secret for the new cookie. NotFound when there is no such user."""
        now = self.clock()
        secret = self._secret()
        async with self.db.transaction() as tx:
            user_id = await user_id_of(tx, user)
            data: dict[str, Any] = {}
            if session_id is not None:
                old = await _get(tx, session_id)
                if old is not None and old.expires_at > now:
                    data = old.data
                await tx.execute("DELETE FROM web_sessions WHERE id = ?", session_id)
            new_id = hash_secret(secret)
            await _insert(tx, new_id, user_id, method, data, now, now, now + lifetime)
            session = await _get(tx, new_id)
        assert session is not None
        return session, secret

    async def delete(self, session_id: str) -> None:
        """Sign out: the session and its form tokens are gone."""
        async with self.db.transaction() as tx:
            await tx.execute("DELETE FROM web_sessions WHERE id = ?", session_id)

    async def delete_user_sessions(self, user: str) -> int:
        """Sign ``user`` out everywhere (and end the sessions that passed their password
        step); how many sessions went."""
        async with self.db.transaction() as tx:
            return await tx.execute(
                "DELETE FROM web_sessions WHERE user_id = (SELECT id FROM users WHERE name = ?)"
                " OR pending_user = ?",
                user,
                user,
            )

    # -- form tokens

    async def issue_form_token(self, session: WebSession, action: str) -> str:
        """A token for one form posting to ``action``, valid while the session is; only the
        newest FORMS_PER_SESSION of a session's tokens are kept."""
        token = self._secret()
        async with self.db.transaction() as tx:
            await tx.execute(
                "INSERT INTO web_form_tokens (token, session_id, action, expires_at)"
                " VALUES (?, ?, ?, ?)",
                hash_secret(token),
                session.id,
                action,
                session.expires_at,
            )
            await tx.execute(
                "DELETE FROM web_form_tokens WHERE session_id = ? AND serial <"
                " (SELECT serial FROM web_form_tokens WHERE session_id = ?"
                " ORDER BY serial DESC LIMIT 1 OFFSET ?)",
                session.id,
                session.id,
                FORMS_PER_SESSION - 1,
            )
        return token

    async def take_form_token(self, session: WebSession, action: str, token: str) -> bool:
        """Whether ``token`` is an unused token of this session for a form posting to
        ``action``; a token that matches is used up by this call."""
        if not _SECRET.match(token):
            return False
        async with self.db.transaction() as tx:
            taken = await tx.execute(
                "DELETE FROM web_form_tokens WHERE token = ? AND session_id = ? AND action = ?"
                " AND expires_at > ?",
                hash_secret(token),
                session.id,
                action,
                self.clock(),
            )
        return taken == 1


async def _get(tx: Tx, session_id: str) -> WebSession | None:
    row = await tx.fetchrow(f"{_SELECT} WHERE s.id = ?", session_id)
    return None if row is None else _session_from(row)


async def _insert(
    tx: Tx,
    session_id: str,
    user_id: int | None,
    method: str | None,
    data: dict[str, Any],
    created_at: float,
    signed_in_at: float | None,
    expires_at: float,
) -> None:
    await tx.execute(
        "INSERT INTO web_sessions (id, user_id, method, pending_user, data, created_at,"
        " signed_in_at, expires_at) VALUES (?, ?, ?, NULL, ?, ?, ?, ?)",
        session_id,
        user_id,
        method,
        json.dumps(data),
        created_at,
        signed_in_at,
        expires_at,
    )
