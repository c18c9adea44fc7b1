"""Credentials in the store: admin API keys and pre-auth keys. Secrets are created here and
returned once; the database keeps only their SHA-256 (auth.py)."""

from __future__ import annotations

from ..auth import Credential, new_credential, secret_matches
from ..errors import BadRequest, Forbidden, NotFound, Unauthorized
from ..models import ApiKey, PreAuthKey
from ..policy import PolicyError
from .rows import (
    PREAUTH_FROM,
    Repository,
    api_key_from,
    dump_list,
    load_policy,
    preauth_from,
    user_id_of,
)

API_KEY_INVALID = (
    "the API key is not valid (unknown or mistyped); create one with `wgpy server apikey create`"
)
API_KEY_EXPIRED = "the API key has expired; create a new one with `wgpy server apikey create`"


class ApiKeyRepository(Repository):
    """Admin API keys: each read or write one transaction."""

    async def create(self, expires_at: float | None) -> tuple[ApiKey, Credential]:
        key = new_credential("api", self.rng)
        async with self.db.transaction() as tx:
            row = await tx.fetchrow(
                "INSERT INTO api_keys (id, key_hash, expires_at, created_at) VALUES (?, ?, ?, ?)"
                " RETURNING id, expires_at, created_at",
                key.id,
                key.secret_hash,
                expires_at,
                self.clock(),
            )
        assert row is not None
        return api_key_from(row), key

    async def all(self) -> list[ApiKey]:
        async with self.db.transaction() as tx:
            rows = await tx.fetch("SELECT id, expires_at, created_at FROM api_keys ORDER BY 3")
        return [api_key_from(r) for r in rows]

    async def expire(self, key_id: str) -> ApiKey:
        now = self.clock()
        async with self.db.transaction() as tx:
            await tx.execute(
                "UPDATE api_keys SET expires_at = ? WHERE id = ?"
                " AND (expires_at IS NULL OR expires_at > ?)",
                now,
                key_id,
                now,
            )
            row = await tx.fetchrow(
                "SELECT id, expires_at, created_at FROM api_keys WHERE id = ?", key_id
            )
        if row is None:
            raise NotFound(f"there is no API key {key_id}")
        return api_key_from(row)

    async def check(self, key: Credential) -> ApiKey:
        async with self.db.transaction() as tx:
            row = await tx.fetchrow(
                "SELECT id, key_hash, expires_at, created_at FROM api_keys WHERE id = ?", key.id
            )
        if row is None or not secret_matches(key, row["key_hash"]):
            raise Unauthorized(API_KEY_INVALID)
        if row["expires_at"] is not None and row["expires_at"] <= self.clock():
            raise Forbidden(API_KEY_EXPIRED)
        return api_key_from(row)


class PreAuthKeyRepository(Repository):
    """Pre-auth keys (a node registers with one): each read or write one transaction."""

    async def create(
        self, user: str, *, reusable: bool, ephemeral: bool, tags: tuple[str, ...], lifetime: float
    ) -> tuple[PreAuthKey, Credential]:
        now = self.clock()
        key = new_credential("auth", self.rng)
        async with self.db.transaction() as tx:
            user_id = await user_id_of(tx, user, "; create it first")
            _, policy = await load_policy(tx)
            try:
                policy.check_tags(user, tags)
            except PolicyError as e:
                raise BadRequest(f"tags: {e}") from None
            await tx.execute(
                "INSERT INTO preauth_keys (id, user_id, key_hash, reusable, ephemeral, tags,"
                " expires_at, used, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, FALSE, ?)",
                key.id,
                user_id,
                key.secret_hash,
                reusable,
                ephemeral,
                dump_list(tags),
                now + lifetime,
                now,
            )
            row = await tx.fetchrow(f"{PREAUTH_FROM} WHERE k.id = ?", key.id)
        assert row is not None
        return preauth_from(row), key

    async def all(self, user: str | None = None) -> list[PreAuthKey]:
        async with self.db.transaction() as tx:
            if user is None:
                rows = await tx.fetch(f"{PREAUTH_FROM} ORDER BY k.created_at")
            else:
                await user_id_of(tx, user)
                rows = await tx.fetch(
                    f"{PREAUTH_FROM} WHERE u.name = ? ORDER BY k.created_at", user
                )
        return [preauth_from(r) for r in rows]

    async def expire(self, key_id: str) -> PreAuthKey:
        now = self.clock()
        async with self.db.transaction() as tx:
            await tx.execute(
                "UPDATE preauth_keys SET expires_at = ? WHERE id = ? AND expires_at > ?",
                now,
                key_id,
                now,
            )
            row = await tx.fetchrow(f"{PREAUTH_FROM} WHERE k.id = ?", key_id)
        if row is None:
            raise NotFound(f"there is no pre-auth key {key_id}")
        return preauth_from(row)
