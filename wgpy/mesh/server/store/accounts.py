"""Accounts of people who sign in: a user's password hash and TOTP secret (columns of
``users``), and the failed sign-ins per account and per source (``login_failures``).

What is decided about them (hashing, codes, how long to wait) is login.py's; this module
keeps the state, each read or write one transaction. The updates that must not race between
replicas are single statements: a TOTP step is used at most once (``use_totp_step``), and a
failure is added under the row's lock (``fail``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..db import Tx
from ..login import Failures, LockoutPolicy
from .rows import Repository, user_id_of


@dataclass(frozen=True)
class Account:
    """What signing in as a user needs; the secrets stay out of the repr (and logs)."""

    user_id: int
    name: str
    password_hash: str | None = field(repr=False)  # None: no password set
    totp_secret: str | None = field(repr=False)  # None: not enrolled
    totp_confirmed: bool  # a code matched the secret: enrolment is done
    totp_last_step: int | None  # the step of the last code accepted

    @property
    def has_password(self) -> bool:
        return self.password_hash is not None


def account_subject(name: str) -> str:
    """The ``login_failures`` row of an account (whether or not the user exists)."""
    return f"user:{name}"


def source_subject(source: str) -> str:
    """The ``login_failures`` row of a source (an auth.source_key)."""
    return f"source:{source}"


_ACCOUNT = (
    "SELECT id, name, password_hash, totp_secret, totp_confirmed, totp_last_step"
    " FROM users WHERE name = ?"
)


class AccountRepository(Repository):
    """Passwords, TOTP and failed sign-ins."""

    async def get(self, name: str) -> Account | None:
        """The account of user ``name``; None when there is no such user."""
        async with self.db.transaction() as tx:
            row = await tx.fetchrow(_ACCOUNT, name)
        if row is None:
            return None
        return Account(
            user_id=int(row["id"]),
            name=row["name"],
            password_hash=row["password_hash"],
            totp_secret=row["totp_secret"],
            totp_confirmed=bool(row["totp_confirmed"]),
            totp_last_step=None if row["totp_last_step"] is None else int(row["totp_last_step"]),
        )

    async def set_password(self, name: str, password_hash: str, *, unlock: bool = True) -> None:
        """Set user ``name``'s password (a hash from login.Passwords); ``unlock``: their
        account's failed sign-ins are forgotten and their web sessions end (an admin setting
        a password unlocks the account and signs them out; a rehash of the same password
        does neither)."""
        async with self.db.transaction() as tx:
            user_id = await user_id_of(tx, name)
            await tx.execute(
                "UPDATE users SET password_hash = ?, password_set_at = ? WHERE id = ?",
                password_hash,
                self.clock(),
                user_id,
            )
            if unlock:
                subject = account_subject(name)
                await tx.execute("DELETE FROM login_failures WHERE subject = ?", subject)
                await _end_sessions(tx, user_id, name)

    async def begin_totp(self, name: str, secret: str) -> bool:
        """Store ``secret`` for an enrolment (the user is shown it, then enters a code);
        False when the user has a confirmed TOTP already (it is kept)."""
        async with self.db.transaction() as tx:
            changed = await tx.execute(
                "UPDATE users SET totp_secret = ?, totp_confirmed = FALSE, totp_last_step = NULL"
                " WHERE name = ? AND NOT totp_confirmed",
                secret,
                name,
            )
        return changed == 1

    async def set_totp(self, name: str, secret: str) -> None:
        """An admin enrols user ``name`` with ``secret`` (shown to the admin once, handed to
        the person): confirmed at once, so no sign-in replaces it; their web sessions end.
        NotFound when there is no such user."""
        async with self.db.transaction() as tx:
            user_id = await user_id_of(tx, name)
            await tx.execute(
                "UPDATE users SET totp_secret = ?, totp_confirmed = TRUE, totp_last_step = NULL"
                " WHERE id = ?",
                secret,
                user_id,
            )
            await _end_sessions(tx, user_id, name)

    async def use_totp_step(self, name: str, secret: str, step: int) -> bool:
        """Record that a code of ``step`` for ``secret`` was accepted, and that the enrolment
        is confirmed; False when another request used this step or a later one first (or the
        secret changed meanwhile): then the code must be refused."""
        async with self.db.transaction() as tx:
            changed = await tx.execute(
                "UPDATE users SET totp_last_step = ?, totp_confirmed = TRUE"
                " WHERE name = ? AND totp_secret = ?"
                " AND (totp_last_step IS NULL OR totp_last_step < ?)",
                step,
                name,
                secret,
                step,
            )
        return changed == 1

    async def reset_totp(self, name: str) -> None:
        """Forget user ``name``'s TOTP: they enrol again at their next sign-in; their web
        sessions end."""
        async with self.db.transaction() as tx:
            user_id = await user_id_of(tx, name)
            await tx.execute(
                "UPDATE users SET totp_secret = NULL, totp_confirmed = FALSE,"
                " totp_last_step = NULL WHERE id = ?",
                user_id,
            )
            await _end_sessions(tx, user_id, name)

    # -- failed sign-ins

    async def failures(self, subject: str) -> Failures:
        """The failures recorded for ``subject`` (account_subject, source_subject)."""
        async with self.db.transaction() as tx:
            return await _failures(tx, subject)

    async def fail(self, subject: str, policy: LockoutPolicy) -> Failures:
        """Count one more failure for ``subject`` now, under ``policy``; the new state. Rows
        of the same kind (accounts or sources) that no longer count (quiet for
        ``policy.forget_after``, no lock) are deleted."""
        now = self.clock()
        async with self.db.transaction() as tx:
            await tx.execute(
                "INSERT INTO login_failures (subject, failures, last_at, locked_until)"
                " VALUES (?, 0, ?, 0) ON CONFLICT (subject) DO NOTHING",
                subject,
                now,
            )
            # a write first: the row stays locked until commit (PostgreSQL), so two replicas
            # counting at once both count; the next statement reads the newest value
            await tx.execute(
                "UPDATE login_failures SET failures = failures WHERE subject = ?", subject
            )
            state = policy.failed(await _failures(tx, subject), now)
            await tx.execute(
                "UPDATE login_failures SET failures = ?, last_at = ?, locked_until = ?"
                " WHERE subject = ?",
                state.count,
                state.last_at,
                state.locked_until,
                subject,
            )
            await tx.execute(
                "DELETE FROM login_failures WHERE last_at < ? AND locked_until < ?"
                " AND subject LIKE ?",
                now - policy.forget_after,
                now,
                subject.partition(":")[0] + ":%",
            )
        return state

    async def clear(self, subject: str) -> None:
        """Forget ``subject``'s failures (an account after a complete sign-in)."""
        async with self.db.transaction() as tx:
            await tx.execute("DELETE FROM login_failures WHERE subject = ?", subject)


async def _end_sessions(tx: Tx, user_id: int, name: str) -> None:
    """The user's web sessions end: those signed in as them, and those that passed their
    password step and owe a code (a leaked password that was changed is worth nothing in a
    session that passed it before)."""
    await tx.execute(
        "DELETE FROM web_sessions WHERE user_id = ? OR pending_user = ?", user_id, name
    )


async def _failures(tx: Tx, subject: str) -> Failures:
    row: Any = await tx.fetchrow(
        "SELECT failures, last_at, locked_until FROM login_failures WHERE subject = ?", subject
    )
    if row is None:
        return Failures()
    return Failures(int(row["failures"]), float(row["last_at"]), float(row["locked_until"]))
