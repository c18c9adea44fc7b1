"""Users in the store: created by an admin, deleted once they have no nodes and the policy no
longer names them."""

from __future__ import annotations

import dataclasses

from ..db import IntegrityConflict
from ..errors import Conflict
from ..models import User
from .rows import USER_COLUMNS, Repository, load_policy, user_from, user_id_of


class UserRepository(Repository):
    """The users: each read or write one transaction."""

    async def create(self, name: str) -> User:
        try:
            async with self.db.transaction() as tx:
                row = await tx.fetchrow(
                    f"INSERT INTO users (name, created_at) VALUES (?, ?) RETURNING {USER_COLUMNS}",
                    name,
                    self.clock(),
                )
        except IntegrityConflict:
            raise Conflict(f'there is already a user "{name}"') from None
        assert row is not None
        return user_from(row)

    async def all(self) -> list[User]:
        """Every user, with the groups of their last OIDC sign-in."""
        async with self.db.transaction() as tx:
            rows = await tx.fetch(f"SELECT {USER_COLUMNS} FROM users ORDER BY name")
            groups: dict[int, list[str]] = {}
            for g in await tx.fetch("SELECT user_id, name FROM user_groups ORDER BY name"):
                groups.setdefault(int(g["user_id"]), []).append(g["name"])
        users = [user_from(r) for r in rows]
        return [dataclasses.replace(u, groups=tuple(groups.get(u.id, ()))) for u in users]

    async def delete(self, name: str) -> None:
        """Refused while the user has nodes or the policy names them; the user's pre-auth
        keys go with them."""
        async with self.db.transaction() as tx:
            user_id = await user_id_of(tx, name)
            count = await tx.fetchval("SELECT COUNT(*) FROM nodes WHERE user_id = ?", user_id)
            if count:
                raise Conflict(f'user "{name}" still has {count} node(s); delete them first')
            _, policy = await load_policy(tx)
            if name in policy.users_named():
                raise Conflict(f'the policy names user "{name}"; take them out of it first')
            await tx.execute("DELETE FROM users WHERE id = ?", user_id)
            # sessions signed in as the user go with it (ON DELETE CASCADE); those that passed
            # its password step go too, not to count for a new user of that name
            await tx.execute("DELETE FROM web_sessions WHERE pending_user = ?", name)
