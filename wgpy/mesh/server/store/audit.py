"""The audit log: authentication events (registrations, logins, sign-ins, admin actions on
nodes, keys and machines; the refused and failed ones too), who, which node, how, from where
and the result, as ``wgpy admin audit`` shows them.

Callers write no secret here: no password, TOTP code, token, auth key or private key; a
public key, a key's id or a machine's serial is fine. As a guard, ``record`` cuts every field
to a bounded length, so hostile input (a long hostname, a long error) cannot grow a row
without bound, and writes control characters in it escaped (a refused request's path is
what its unauthenticated sender chose: no newline or terminal escape reaches the log);
events are kept AUDIT_RETENTION (a year: the server's heartbeat prunes).
"""

from __future__ import annotations

import builtins

from ..db import Row
from ..models import AuditEvent
from .rows import Repository

AUDIT_COLUMNS = "id, at, event, result, method, user_name, node_id, source, detail"
MAX_FIELD = 64  # characters of event, result, method, user and source
MAX_DETAIL = 500  # characters of detail
MAX_LIST = 10_000  # events one list returns at most
AUDIT_RETENTION = 365 * 86400.0  # seconds an event is kept


def audit_from(row: Row) -> AuditEvent:
    return AuditEvent(
        id=int(row["id"]),
        at=row["at"],
        event=row["event"],
        result=row["result"],
        method=row["method"],
        user=row["user_name"],
        node_id=None if row["node_id"] is None else int(row["node_id"]),
        source=row["source"],
        detail=row["detail"],
    )


def printable(text: str) -> str:
    """``text`` with every character that is not printable (newlines, terminal escapes,
    bidirectional overrides) written as its Python escape (``\\x1b``, ``\\n``,
    ``\\u202e``), so a field never spans lines or drives the terminal that shows it."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def _cut(value: str | None, limit: int) -> str | None:
    if value is None:
        return None
    value = printable(value)
    return value if len(value) <= limit else value[: limit - 1] + "\u2026"


class AuditRepository(Repository):
    """Audit events: each write or read one transaction."""

    async def record(
        self,
        event: str,
        *,
        result: str,
        method: str | None = None,
        user: str | None = None,
        node_id: int | None = None,
        source: str | None = None,
        detail: str | None = None,
    ) -> AuditEvent:
        """Record one event, now. ``result``: "ok", "refused" (the credentials or the policy
        said no) or "failed" (something else went wrong)."""
        if not event or not result:
            raise ValueError("an audit event needs an event name and a result")
        async with self.db.transaction() as tx:
            row = await tx.fetchrow(
                "INSERT INTO audit_log (at, event, result, method, user_name, node_id, source,"
                f" detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING {AUDIT_COLUMNS}",
                self.clock(),
                _cut(event, MAX_FIELD),
                _cut(result, MAX_FIELD),
                _cut(method, MAX_FIELD),
                _cut(user, MAX_FIELD),
                node_id,
                _cut(source, MAX_FIELD),
                _cut(detail, MAX_DETAIL),
            )
        assert row is not None
        return audit_from(row)

    async def prune(self, retention: float = AUDIT_RETENTION) -> int:
        """Delete the events older than ``retention`` seconds; how many."""
        async with self.db.transaction() as tx:
            return await tx.execute("DELETE FROM audit_log WHERE at < ?", self.clock() - retention)

    async def list(
        self, limit: int = 100, since: float | None = None, user: str | None = None
    ) -> builtins.list[AuditEvent]:
        """The newest ``limit`` events (at most MAX_LIST), oldest first; only those at or after
        ``since`` (seconds since the epoch) and of ``user`` when given."""
        limit = max(0, min(limit, MAX_LIST))
        where: builtins.list[str] = []
        args: builtins.list[object] = []
        if since is not None:
            where.append("at >= ?")
            args.append(since)
        if user is not None:
            where.append("user_name = ?")
            args.append(user)
        condition = f" WHERE {' AND '.join(where)}" if where else ""
        async with self.db.transaction() as tx:
            rows = await tx.fetch(
                f"SELECT {AUDIT_COLUMNS} FROM audit_log{condition} ORDER BY id DESC LIMIT ?",
                *args,
                limit,
            )
        return [audit_from(r) for r in reversed(rows)]
