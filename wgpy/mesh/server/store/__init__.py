"""The store: every read and write of the data model (docs/mesh-api.md), each in one
transaction, the same SQL for SQLite and PostgreSQL (db.py).

A :class:`Store` holds the database and one repository per part of the model, each a small
class over that database: ``users``, ``api_keys``, ``preauth_keys``, ``policy``, ``nodes``,
``ice`` (nodes' ICE candidates), ``streams`` (map streams and replicas), ``accounts``
(users' passwords and TOTP, failed sign-ins), ``machines`` (machine certificates),
``login_requests`` (nodes waiting for a person to sign in and approve them), ``sessions``
(the sign-in pages' web sessions and form tokens), ``oidc`` (OIDC sign-ins in progress,
OIDC users and their groups), ``audit`` (the audit log of authentication events) and
``routes`` (nodes' subnet and exit routes, their approvals and primary routers). A new
part is one more module and one more attribute. What several repositories share (SQL, rows
to records, a user's id, the policy in force) is in rows.py. Errors are the API's
(errors.py), with the sentence the client sees.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from .. import migrations
from ..auth import Rng
from ..db import Database, open_database
from .accounts import AccountRepository
from .audit import AuditRepository
from .ice import IceRepository
from .keys import ApiKeyRepository, PreAuthKeyRepository
from .login_requests import LoginRequestRepository
from .machines import MachineRepository
from .nodes import NodeRepository
from .oidc import OidcRepository
from .policy import PolicyRepository
from .routes import RouteRepository
from .sessions import SessionRepository
from .streams import StreamRepository
from .users import UserRepository

__all__ = ["Store", "open_store"]


class Store:
    """The database and the repositories over it; they share its clock and randomness."""

    def __init__(
        self, db: Database, *, clock: Callable[[], float] = time.time, rng: Rng = os.urandom
    ) -> None:
        self.db = db
        self.clock = clock
        self.users = UserRepository(db, clock=clock)
        self.accounts = AccountRepository(db, clock=clock)
        self.api_keys = ApiKeyRepository(db, clock=clock, rng=rng)
        self.preauth_keys = PreAuthKeyRepository(db, clock=clock, rng=rng)
        self.policy = PolicyRepository(db, clock=clock)
        self.nodes = NodeRepository(db, clock=clock, rng=rng)
        self.ice = IceRepository(db, clock=clock)
        self.streams = StreamRepository(db, clock=clock)
        self.machines = MachineRepository(db, clock=clock, rng=rng)
        self.login_requests = LoginRequestRepository(db, nodes=self.nodes, clock=clock, rng=rng)
        self.sessions = SessionRepository(db, clock=clock, rng=rng)
        self.oidc = OidcRepository(db, clock=clock, rng=rng)
        self.audit = AuditRepository(db, clock=clock)
        self.routes = RouteRepository(db, clock=clock)

    @property
    def replica(self) -> str:
        return self.db.replica

    async def close(self) -> None:
        await self.db.close()


async def open_store(
    *,
    state_dir: Path | None,
    database_url: str | None,
    replica: str,
    clock: Callable[[], float] = time.time,
    rng: Rng = os.urandom,
) -> Store:
    """Open the database and bring its schema up to date."""
    db = await open_database(
        state_dir=state_dir,
        database_url=database_url,
        replica=replica,
        setup=lambda db: migrations.migrate(db, clock()),
    )
    try:
        store = Store(db, clock=clock, rng=rng)
        await store.policy.resolve_stored()
    except BaseException:
        await db.close()
        raise
    return store
