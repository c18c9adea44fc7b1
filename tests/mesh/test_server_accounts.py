"""store/accounts.py on SQLite and PostgreSQL: passwords, TOTP enrolment and used steps,
failed sign-ins per account and per source (counted across replicas, pruned), and what the
database holds (a hash, never the password)."""

from __future__ import annotations

import asyncio

import pytest

from wgpy.mesh.server import login
from wgpy.mesh.server.errors import NotFound
from wgpy.mesh.server.login import Failures, LockoutPolicy, Passwords
from wgpy.mesh.server.store.accounts import account_subject, source_subject

from .conftest import Database
from .test_server_store import Clock, opened

CHEAP = Passwords(time_cost=1, memory_cost=8, parallelism=1)
POLICY = LockoutPolicy(free=2, lock_after=4, lock_for=60.0, forget_after=600.0)


async def test_a_new_user_has_no_password_and_no_totp(backend: str, database: Database) -> None:
    async with opened(database) as store:
        await store.users.create("alice")
        account = await store.accounts.get("alice")
        assert account is not None and account.name == "alice"
        assert not account.has_password and account.totp_secret is None
        assert not account.totp_confirmed and account.totp_last_step is None
        assert await store.accounts.get("nobody") is None


async def test_password_is_stored_as_its_hash(backend: str, database: Database) -> None:
    clock = Clock()
    async with opened(database, clock=clock) as store:
        await store.users.create("alice")
        await store.accounts.set_password("alice", CHEAP.hash("correct horse"))
        account = await store.accounts.get("alice")
        assert account is not None and CHEAP.verify(account.password_hash, "correct horse").ok
        assert "correct horse" not in repr(account) and "argon2" not in repr(account)
        async with store.db.transaction() as tx:
            row = await tx.fetchrow("SELECT * FROM users WHERE name = 'alice'")
        assert row is not None and row["password_set_at"] == clock.now
        assert "correct horse" not in " ".join(str(v) for v in dict(row).values())
        with pytest.raises(NotFound, match='there is no user "bob"'):
            await store.accounts.set_password("bob", CHEAP.hash("correct horse"))


async def test_setting_a_password_unlocks_the_account(backend: str, database: Database) -> None:
    async with opened(database) as store:
        await store.users.create("alice")
        for _ in range(POLICY.lock_after):
            state = await store.accounts.fail(account_subject("alice"), POLICY)
        assert state.locked_until > 0
        await store.accounts.set_password("alice", CHEAP.hash("new password"))
        assert await store.accounts.failures(account_subject("alice")) == Failures()


async def test_totp_enrolment_and_steps_used_once(backend: str, database: Database) -> None:
    async with opened(database) as store:
        await store.users.create("alice")
        secret = login.new_totp_secret()
        assert await store.accounts.begin_totp("alice", secret)
        again = login.new_totp_secret()
        assert await store.accounts.begin_totp("alice", again)  # not confirmed: replaced
        account = await store.accounts.get("alice")
        assert account is not None and account.totp_secret == again and not account.totp_confirmed
        # the secret shown before no longer counts
        assert not await store.accounts.use_totp_step("alice", secret, 100)
        assert await store.accounts.use_totp_step("alice", again, 100)
        account = await store.accounts.get("alice")
        assert account is not None and account.totp_confirmed and account.totp_last_step == 100
        # the same step, or an earlier one, only once
        assert not await store.accounts.use_totp_step("alice", again, 100)
        assert not await store.accounts.use_totp_step("alice", again, 99)
        assert await store.accounts.use_totp_step("alice", again, 101)
        # confirmed: a new enrolment is refused and the secret kept
        assert not await store.accounts.begin_totp("alice", secret)
        account = await store.accounts.get("alice")
        assert account is not None and account.totp_secret == again
        # reset: enrol again
        await store.accounts.reset_totp("alice")
        account = await store.accounts.get("alice")
        assert account is not None and account.totp_secret is None
        assert not account.totp_confirmed and account.totp_last_step is None
        assert await store.accounts.begin_totp("alice", secret)
        with pytest.raises(NotFound):
            await store.accounts.reset_totp("bob")
        assert not await store.accounts.begin_totp("bob", secret)


async def test_a_step_is_used_once_across_replicas(backend: str, database: Database) -> None:
    async with opened(database, "r1") as one, opened(database, "r2") as two:
        await one.users.create("alice")
        secret = login.new_totp_secret()
        assert await one.accounts.begin_totp("alice", secret)
        for step in range(10, 20):
            results = await asyncio.gather(
                one.accounts.use_totp_step("alice", secret, step),
                two.accounts.use_totp_step("alice", secret, step),
            )
            assert sorted(results) == [False, True]


async def test_failures_count_lock_and_clear(backend: str, database: Database) -> None:
    clock = Clock()
    async with opened(database, clock=clock) as store:
        subject = account_subject("alice")  # whether or not the user exists
        states = []
        for _ in range(POLICY.lock_after):
            states.append(await store.accounts.fail(subject, POLICY))
            clock.now += 1
        assert [s.count for s in states] == [1, 2, 3, 4]
        assert states[-1].locked_until == states[-1].last_at + 60.0
        assert await store.accounts.failures(subject) == states[-1]
        assert await store.accounts.failures(source_subject("192.0.2.1")) == Failures()
        await store.accounts.clear(subject)
        assert await store.accounts.failures(subject) == Failures()


async def test_failures_from_two_replicas_all_count(backend: str, database: Database) -> None:
    policy = LockoutPolicy(free=100, lock_after=1000, lock_for=60.0, forget_after=600.0)
    async with opened(database, "r1") as one, opened(database, "r2") as two:
        subject = source_subject("192.0.2.1")
        await asyncio.gather(
            *(store.accounts.fail(subject, policy) for _ in range(10) for store in (one, two))
        )
        assert (await one.accounts.failures(subject)).count == 20


async def test_failures_that_no_longer_count_are_pruned(backend: str, database: Database) -> None:
    clock = Clock()
    async with opened(database, clock=clock) as store:
        await store.accounts.fail(account_subject("old"), POLICY)
        await store.accounts.fail(source_subject("192.0.2.1"), POLICY)
        for _ in range(POLICY.lock_after):
            await store.accounts.fail(account_subject("locked"), POLICY)
        clock.now += POLICY.forget_after + 1
        await store.accounts.fail(account_subject("new"), POLICY)
        async with store.db.transaction() as tx:
            rows = await tx.fetch("SELECT subject FROM login_failures ORDER BY subject")
        # the old account's row went; the source's is another kind (its own policy prunes it)
        assert [r["subject"] for r in rows] == ["source:192.0.2.1", "user:new"]
