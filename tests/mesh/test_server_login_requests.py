"""store/login_requests.py on SQLite and PostgreSQL: a node's request approved once (a new
node with a fresh name and address, or the key's node of the same user kept with its name
and addresses and a renewed expiry), refused, cancelled (an approval whose token was never
taken undone), expired; the token taken once, by the secret's holder only; nothing secret
stored."""

from __future__ import annotations

import asyncio

import pytest

from wgpy.mesh.server.auth import Credential
from wgpy.mesh.server.errors import Conflict, Forbidden, NotFound, Unauthorized
from wgpy.mesh.server.models import APPROVED, CANCELLED, EXPIRED, PENDING, REFUSED
from wgpy.mesh.server.store import Store
from wgpy.mesh.server.store.login_requests import ID_BYTES

from .conftest import Database, new_public_key
from .test_server_store import Clock, new_key, opened

DAY = 86400.0


def other_than(secret: str) -> str:
    return ("A" if secret[0] != "A" else "B") + secret[1:]


async def user_id(store: Store, name: str) -> int:
    users = {u.name: u.id for u in await store.users.all()}
    if name not in users:
        return (await store.users.create(name)).id
    return users[name]


async def test_create_get_approve_take_token(backend: str, database: Database) -> None:
    clock = Clock()
    async with opened(database, clock=clock) as store:
        alice = await user_id(store, "alice")
        key = new_public_key()
        request, secret = await store.login_requests.create(key, "laptop", lifetime=600)
        assert request.state == PENDING and request.public_key == key
        assert request.hostname == "laptop" and request.user is None
        assert request.expires_at == clock.now + 600
        assert len(request.id) >= (ID_BYTES * 8) // 6 and len(secret) >= 43
        assert await store.login_requests.get(request.id) == request
        assert await store.login_requests.get("nope") is None
        assert [r.id for r in await store.login_requests.all()] == [request.id]

        clock.now += 10
        node = await store.login_requests.approve(request.id, alice, "password")
        assert node.user == "alice" and node.hostname == "laptop" and node.public_key == key
        assert node.expires_at == clock.now + 180 * DAY and not node.tags
        approved = await store.login_requests.get(request.id)
        assert approved is not None and approved.state == APPROVED
        assert (approved.user, approved.method, approved.node_id) == ("alice", "password", node.id)
        assert approved.decided_at == clock.now and not approved.token_taken
        assert await store.login_requests.all() == []

        # The node cannot act before it takes its token, and takes it once.
        with pytest.raises(Unauthorized):
            await store.login_requests.take_token(request.id, other_than(secret))
        taken, token = await store.login_requests.take_token(request.id, secret)
        assert taken.token_taken and isinstance(token, Credential)
        assert (await store.nodes.authenticate(token)).id == node.id
        with pytest.raises(Conflict, match="already fetched"):
            await store.login_requests.take_token(request.id, secret)
        with pytest.raises(Conflict, match="already approved"):
            await store.login_requests.approve(request.id, alice, "password")

        # Nothing secret in the database: only the secret's hash, no token.
        async with store.db.transaction() as tx:
            row = await tx.fetchrow("SELECT * FROM login_requests")
            node_row = await tx.fetchrow("SELECT token_id FROM nodes")
        assert row is not None and node_row is not None
        stored = " ".join(str(v) for v in dict(row).values())
        assert secret not in stored and token.secret not in stored
        assert node_row["token_id"] == token.id


async def test_second_request_of_a_key_keeps_the_node(backend: str, database: Database) -> None:
    """An expired node logs in again with its key: same node, name and addresses."""
    clock = Clock()
    async with opened(database, clock=clock) as store:
        alice = await user_id(store, "alice")
        store.login_requests.key_expiry = 30 * DAY
        key = new_public_key()
        first, _ = await store.login_requests.create(key, "laptop")
        node = await store.login_requests.approve(first.id, alice, "password")
        other, _ = await store.login_requests.create(new_public_key(), "laptop")
        second_node = await store.login_requests.approve(other.id, alice, "oidc")
        assert second_node.hostname == "laptop-1" and second_node.addr_index != node.addr_index

        clock.now += 31 * DAY
        assert (await store.nodes.get(node.id)).expired(clock.now)
        again, secret = await store.login_requests.create(key, "renamed-meanwhile")
        renewed = await store.login_requests.approve(again.id, alice, "oidc")
        assert renewed.id == node.id and renewed.hostname == "laptop"
        assert renewed.addr_index == node.addr_index and renewed.ip_addresses == node.ip_addresses
        assert renewed.expires_at == clock.now + 30 * DAY and not renewed.expired(clock.now)
        _, token = await store.login_requests.take_token(again.id, secret)
        assert (await store.nodes.authenticate(token)).id == node.id

        # Never: the setting None leaves the node without an expiry.
        store.login_requests.key_expiry = None
        forever, _ = await store.login_requests.create(new_public_key(), "server")
        assert (await store.login_requests.approve(forever.id, alice, "admin")).expires_at is None


async def test_node_token_keeps_the_node_under_a_new_key(backend: str, database: Database) -> None:
    async with opened(database) as store:
        alice = await user_id(store, "alice")
        request, secret = await store.login_requests.create(new_public_key(), "laptop")
        node = await store.login_requests.approve(request.id, alice, "password")
        _, token = await store.login_requests.take_token(request.id, secret)
        new_key = new_public_key()
        relogin, _ = await store.login_requests.create(new_key, "laptop", node_token=token)
        assert relogin.node_id == node.id
        again = await store.login_requests.approve(relogin.id, alice, "password")
        assert again.id == node.id and again.public_key == new_key
        with pytest.raises(Unauthorized, match="node token is not valid"):
            await store.login_requests.create(
                new_public_key(), "x", node_token=Credential("node", "0" * 16, "x" * 43)
            )


async def test_another_users_key_is_refused(backend: str, database: Database) -> None:
    async with opened(database) as store:
        bob = await user_id(store, "bob")
        await user_id(store, "alice")
        auth = await new_key(store, "alice")
        key = new_public_key()
        await store.nodes.register(auth, key, "alices")
        request, _ = await store.login_requests.create(key, "mine")
        with pytest.raises(Forbidden, match="another user's node"):
            await store.login_requests.approve(request.id, bob, "password")
        still = await store.login_requests.get(request.id)
        assert still is not None and still.state == PENDING  # rolled back, not decided
        assert [n.hostname for n in await store.nodes.all()] == ["alices"]
        with pytest.raises(NotFound, match="no user with id"):
            await store.login_requests.approve(request.id, 999_999, "admin")
        with pytest.raises(ValueError, match="login method"):
            await store.login_requests.approve(request.id, bob, "guess")


async def test_quota_applies(backend: str, database: Database) -> None:
    async with opened(database) as store:
        alice = await user_id(store, "alice")
        store.login_requests.max_nodes = 1
        first, _ = await store.login_requests.create(new_public_key(), "a")
        await store.login_requests.approve(first.id, alice, "password")
        second, _ = await store.login_requests.create(new_public_key(), "b")
        with pytest.raises(Forbidden, match="already has 1 nodes"):
            await store.login_requests.approve(second.id, alice, "password")


async def test_refuse_cancel_expire(backend: str, database: Database) -> None:
    clock = Clock()
    async with opened(database, clock=clock) as store:
        alice = await user_id(store, "alice")
        refused, secret = await store.login_requests.create(new_public_key(), "a")
        done = await store.login_requests.refuse(refused.id, "  not this device.  ")
        assert done.state == REFUSED and done.message == "not this device."
        with pytest.raises(Conflict, match="was refused"):
            await store.login_requests.approve(refused.id, alice, "password")
        with pytest.raises(Conflict, match="refused, not approved"):
            await store.login_requests.take_token(refused.id, secret)

        cancelled, _ = await store.login_requests.create(new_public_key(), "b")
        assert (await store.login_requests.cancel(cancelled.id)).state == CANCELLED
        assert (await store.login_requests.cancel(cancelled.id)).state == CANCELLED
        with pytest.raises(Conflict, match="cancelled on the device"):
            await store.login_requests.approve(cancelled.id, alice, "password")
        with pytest.raises(NotFound):
            await store.login_requests.cancel("unknown")

        expiring, _ = await store.login_requests.create(new_public_key(), "c", lifetime=60)
        clock.now += 60
        got = await store.login_requests.get(expiring.id)
        assert got is not None and got.state == EXPIRED
        with pytest.raises(Conflict, match="has expired"):
            await store.login_requests.approve(expiring.id, alice, "password")
        with pytest.raises(Conflict, match="has expired"):
            await store.login_requests.refuse(expiring.id, "no")
        assert await store.nodes.all() == []

        clock.now += DAY + 600
        assert await store.login_requests.prune() == 3
        assert await store.login_requests.get(expiring.id) is None


async def test_cancel_after_approval_undoes_the_new_node(backend: str, database: Database) -> None:
    """Ctrl-C on the device just as the person approved: nothing stays registered."""
    async with opened(database) as store:
        alice = await user_id(store, "alice")
        request, secret = await store.login_requests.create(new_public_key(), "a")
        await store.login_requests.approve(request.id, alice, "password")
        assert len(await store.nodes.all()) == 1
        assert (await store.login_requests.cancel(request.id)).state == CANCELLED
        assert await store.nodes.all() == []
        with pytest.raises(Conflict):
            await store.login_requests.take_token(request.id, secret)

        taken, secret = await store.login_requests.create(new_public_key(), "b")
        await store.login_requests.approve(taken.id, alice, "password")
        await store.login_requests.take_token(taken.id, secret)
        with pytest.raises(Conflict, match="took its token"):
            await store.login_requests.cancel(taken.id)


async def test_concurrent_approvals_decide_once(backend: str, database: Database) -> None:
    async with opened(database) as store:
        alice = await user_id(store, "alice")
        request, _ = await store.login_requests.create(new_public_key(), "a")
        results = await asyncio.gather(
            *(store.login_requests.approve(request.id, alice, "password") for _ in range(4)),
            store.login_requests.cancel(request.id),
            return_exceptions=True,
        )
        approved = [r for r in results[:4] if not isinstance(r, BaseException)]
        assert all(isinstance(r, Conflict) for r in results[:4] if isinstance(r, BaseException))
        final = await store.login_requests.get(request.id)
        assert final is not None
        if final.state == APPROVED:
            assert len(approved) == 1 and len(await store.nodes.all()) == 1
        else:
            assert final.state == CANCELLED and await store.nodes.all() == []
