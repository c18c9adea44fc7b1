"""signin.py over the store on SQLite and PostgreSQL: the password step, TOTP enrolment and
check, no code twice, and a bounded brute-force run that slows down and then locks the
account (and, across names, the source), with the clock moved by hand."""

from __future__ import annotations

from wgpy.mesh.server import login
from wgpy.mesh.server.login import LockoutPolicy, Passwords
from wgpy.mesh.server.signin import NO_PASSWORD_STEP, WRONG_PASSWORD, Next, SignIn
from wgpy.mesh.server.store import Store
from wgpy.mesh.server.store.accounts import account_subject

from .conftest import Database
from .test_server_store import Clock, opened

CHEAP = Passwords(time_cost=1, memory_cost=8, parallelism=1)
ACCOUNT = LockoutPolicy(free=3, lock_after=6, lock_for=900.0, forget_after=3600.0)
SOURCE = LockoutPolicy(free=8, lock_after=12, lock_for=900.0, forget_after=3600.0)
HERE = "192.0.2.10"


def signin(store: Store) -> SignIn:
    return SignIn(store, passwords=CHEAP, account_policy=ACCOUNT, source_policy=SOURCE)


async def with_password(store: Store, name: str = "alice", password: str = "correct horse") -> None:
    await store.users.create(name)
    await signin(store).set_password(name, password)


async def test_password_then_enrolment_then_code(backend: str, database: Database) -> None:
    clock = Clock()
    async with opened(database, clock=clock) as store:
        await with_password(store)
        s = signin(store)
        outcome = await s.check_password("alice", "correct horse", HERE)
        assert (outcome.next, outcome.passed) == (Next.ENROL, True)
        enrolment = await s.begin_enrolment("alice")
        assert enrolment is not None and enrolment.secret in enrolment.uri
        assert enrolment.uri.startswith("otpauth://totp/wgpy:alice?")
        code = login.totp_code(enrolment.secret, login.totp_step(clock.now))
        assert (await s.check_totp("alice", code, HERE)).next is Next.SIGNED_IN
        # the same code again, even after signing in with the password once more: refused
        assert (await s.check_password("alice", "correct horse", HERE)).next is Next.TOTP
        assert await s.begin_enrolment("alice") is None  # enrolled: no new secret
        again = await s.check_totp("alice", code, HERE)
        assert again.next is Next.FAILED and "used already" in again.message
        clock.now += login.TOTP_STEP
        code = login.totp_code(enrolment.secret, login.totp_step(clock.now))
        assert (await s.check_totp("alice", code, HERE)).next is Next.SIGNED_IN


async def test_wrong_name_or_password_is_one_sentence(backend: str, database: Database) -> None:
    async with opened(database) as store:
        await with_password(store)
        await store.users.create("nopassword")
        s = signin(store)
        for name, password in [
            ("alice", "wrong horse"),
            ("nobody", "correct horse"),
            ("nopassword", ""),
        ]:
            outcome = await s.check_password(name, password, HERE)
            assert (outcome.next, outcome.message) == (Next.FAILED, WRONG_PASSWORD)
            assert (await store.accounts.failures(account_subject(name))).count == 1


async def test_totp_without_the_password_step(backend: str, database: Database) -> None:
    async with opened(database) as store:
        await with_password(store)
        outcome = await signin(store).check_totp("alice", "123456", HERE)
        assert (outcome.next, outcome.message) == (Next.FAILED, NO_PASSWORD_STEP)


async def test_brute_force_slows_then_locks_the_account(backend: str, database: Database) -> None:
    clock = Clock()
    async with opened(database, clock=clock) as store:
        await with_password(store)
        s = signin(store)
        outcomes = []
        for tries in range(40):  # bounded: each try waits as told, as a patient attacker would
            outcome = await s.check_password("alice", f"guess {tries}", HERE)
            outcomes.append(outcome.next)
            if outcome.next is Next.REFUSED:
                if "locked" in outcome.message:
                    break
                clock.now += outcome.retry_after
        assert outcomes.count(Next.FAILED) == ACCOUNT.lock_after
        assert outcome.next is Next.REFUSED and outcome.retry_after == 900.0
        assert "this account: it is locked for 15 more minutes" in outcome.message
        # locked: even the right password is not checked
        refused = await s.check_password("alice", "correct horse", HERE)
        assert refused.next is Next.REFUSED
        # an admin setting the password unlocks it
        await s.set_password("alice", "another horse")
        assert (await s.check_password("alice", "another horse", HERE)).next is Next.ENROL


async def test_slowed_down_tries_are_refused_until_the_wait_is_over(
    backend: str, database: Database
) -> None:
    clock = Clock()
    async with opened(database, clock=clock) as store:
        await with_password(store)
        s = signin(store)
        for i in range(ACCOUNT.free):
            assert (await s.check_password("alice", f"guess {i}", HERE)).next is Next.FAILED
        refused = await s.check_password("alice", "correct horse", HERE)
        assert refused.next is Next.REFUSED and refused.retry_after == 1.0
        assert refused.message.endswith("wait 1 second before trying again")
        clock.now += 1.0
        assert (await s.check_password("alice", "correct horse", HERE)).passed


async def test_guessing_many_names_locks_the_source(backend: str, database: Database) -> None:
    clock = Clock()
    async with opened(database, clock=clock) as store:
        await with_password(store)
        s = signin(store)
        for i in range(SOURCE.lock_after):
            outcome = await s.check_password(f"user{i}", "guess", HERE)
            assert outcome.next is Next.FAILED, outcome
            clock.now += 60  # slow enough for every per-source delay
        refused = await s.check_password("alice", "correct horse", HERE)
        assert refused.next is Next.REFUSED and "this address: it is locked" in refused.message
        # another address is not held back
        assert (await s.check_password("alice", "correct horse", "192.0.2.11")).passed


async def test_wrong_codes_count_and_a_sign_in_clears_them(
    backend: str, database: Database
) -> None:
    clock = Clock()
    async with opened(database, clock=clock) as store:
        await with_password(store)
        s = signin(store)
        await s.check_password("alice", "correct horse", HERE)
        enrolment = await s.begin_enrolment("alice")
        assert enrolment is not None
        right = login.totp_code(enrolment.secret, login.totp_step(clock.now))
        wrong = f"{(int(right) + 1) % 1_000_000:06d}"
        outcome = await s.check_totp("alice", wrong, HERE)
        assert outcome.next is Next.FAILED and "not right" in outcome.message
        malformed = await s.check_totp("alice", "12 34", HERE)
        assert malformed.next is Next.FAILED and "6 digits" in malformed.message
        assert (await store.accounts.failures(account_subject("alice"))).count == 1
        assert (await s.check_totp("alice", right, HERE)).next is Next.SIGNED_IN
        assert (await store.accounts.failures(account_subject("alice"))).count == 0


async def test_a_hash_with_old_parameters_is_replaced(backend: str, database: Database) -> None:
    async with opened(database) as store:
        await with_password(store)
        stronger = Passwords(time_cost=2, memory_cost=16, parallelism=1)
        s = SignIn(store, passwords=stronger)
        assert not (await s.check_password("alice", "wrong horse", HERE)).passed
        assert (await s.check_password("alice", "correct horse", HERE)).passed
        # the rehash keeps the count: only a complete sign-in clears it
        assert (await store.accounts.failures(account_subject("alice"))).count == 1
        account = await store.accounts.get("alice")
        assert account is not None and account.password_hash is not None
        assert account.password_hash.startswith("$argon2id$v=19$m=16,t=2,p=1$")


async def test_names_as_typed_and_hostile_ones(backend: str, database: Database) -> None:
    async with opened(database) as store:
        await with_password(store)
        s = signin(store)
        outcome = await s.check_password("  Alice ", "correct horse", HERE)
        assert (outcome.next, outcome.user) == (Next.ENROL, "alice")
        for name in ("x" * 10_000, "../alice", "alice\0", "", "al ice"):
            outcome = await s.check_password(name, "correct horse", HERE)
            assert (outcome.next, outcome.message) == (Next.FAILED, WRONG_PASSWORD)
            assert len(outcome.user) <= 64
            assert (await s.check_totp(name, "123456", HERE)).next is Next.FAILED
        async with store.db.transaction() as tx:
            rows = await tx.fetch("SELECT subject, failures FROM login_failures")
        # no account rows for names no user can have; the source counted each
        assert [(r["subject"], r["failures"]) for r in rows] == [(f"source:{HERE}", 5)]
