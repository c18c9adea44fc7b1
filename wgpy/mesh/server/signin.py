"""Signing in as a person, over the store: what the web pages call (login.py decides,
store/accounts.py keeps the state).

Two steps, each answered with an :class:`Outcome` whose ``next`` says what the page shows:

1. :meth:`SignIn.check_password` (name, password, source address): refused at once while the
   account or the source must wait (``REFUSED``, with the sentence and ``retry_after``);
   otherwise the password is checked in a thread (argon2 is CPU work, a few at once). A wrong
   name or password is one sentence either way (``FAILED``) and counts against the name and
   the source. A right one leads to ``TOTP`` (enrolled) or ``ENROL`` (not yet: call
   :meth:`SignIn.begin_enrolment` and show its secret and QR code).
2. :meth:`SignIn.check_totp` (the same name, the code): ``SIGNED_IN`` when the code is right
   and its step unused, which also forgets the account's failures; a wrong or reused code is
   ``FAILED`` and counts. Failures are cleared only here, so knowing the password does not
   buy more tries at the code.

The caller keeps which user passed step 1 (the web session) and never calls step 2 for a
user who did not.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

from wgpy.log import get_logger

from . import login
from .auth import Rng, source_key
from .login import (
    ACCOUNT_POLICY,
    SOURCE_POLICY,
    Failures,
    LockoutPolicy,
    Passwords,
    TotpOutcome,
)
from .policy import USER_NAME
from .store import Store
from .store.accounts import account_subject, source_subject

WRONG_PASSWORD = "the user name or password is not right"
NO_PASSWORD_STEP = "sign in with your user name and password first"
NOT_ENROLLED = (
    "your account has no authenticator (TOTP) set up, and on this server only an admin sets "
    "one up; ask an admin to run wgpy admin users totp enrol with your user name"
)
HASHES_AT_ONCE = 2  # argon2 hashes computed at once (64 MiB and one core each)


def normalize_name(name: str) -> str:
    """A user name as typed on a sign-in page, in the form users are named."""
    return name.strip().lower()


class Next(enum.Enum):
    REFUSED = "refused"  # too many failures: wait (message, retry_after)
    FAILED = "failed"  # wrong password or code (message); counted
    ENROL = "enrol"  # password right, no TOTP yet: begin_enrolment, then check_totp
    TOTP = "totp"  # password right: ask for the code
    SIGNED_IN = "signed_in"


@dataclass(frozen=True)
class Outcome:
    next: Next
    user: str
    message: str = ""
    retry_after: float = 0.0

    @property
    def passed(self) -> bool:
        return self.next in (Next.ENROL, Next.TOTP, Next.SIGNED_IN)


@dataclass(frozen=True)
class Enrolment:
    secret: str  # base32, shown as text beside the QR code
    uri: str  # otpauth://totp/wgpy:NAME?secret=...&issuer=wgpy, for the QR code


class SignIn:
    """Sign-ins over ``store``; one per server (its semaphore bounds the hashing)."""

    def __init__(
        self,
        store: Store,
        *,
        passwords: Passwords | None = None,
        account_policy: LockoutPolicy = ACCOUNT_POLICY,
        source_policy: LockoutPolicy = SOURCE_POLICY,
        rng: Rng = os.urandom,
        issuer: str = login.TOTP_ISSUER,
        enrol_on_sign_in: bool = True,
    ) -> None:
        self.store = store
        self.passwords = passwords or Passwords()
        self.account_policy = account_policy
        self.source_policy = source_policy
        self.rng = rng
        self.issuer = issuer
        # False (--totp-enrolment admin): a right password of a user whose TOTP an admin has
        # not set up goes no further; no sign-in shows or confirms a key
        self.enrol_on_sign_in = enrol_on_sign_in
        self._hashing = asyncio.Semaphore(HASHES_AT_ONCE)
        # subject -> (lock, holders and waiters): one check at a time per account and source
        self._checking: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def _one_at_a_time(self, *subjects: str) -> AsyncIterator[None]:
        """Hold the locks of ``subjects`` (account_subject, source_subject), taken in one
        order: the refusal check, the password or code check and the failure it counts run
        as one step per account and per source, so guesses sent at once are counted as
        they are checked and cannot all pass the lockout's check before the first failure
        is counted (in this process; each replica checks one at a time of its own)."""
        taken = sorted(set(subjects))
        for subject in taken:
            lock, users = self._checking.get(subject, (asyncio.Lock(), 0))
            self._checking[subject] = (lock, users + 1)
        held: list[asyncio.Lock] = []
        try:
            for subject in taken:
                lock = self._checking[subject][0]
                await lock.acquire()
                held.append(lock)
            yield
        finally:
            for lock in reversed(held):
                lock.release()
            for subject in taken:
                lock, users = self._checking[subject]
                if users <= 1:
                    del self._checking[subject]
                else:
                    self._checking[subject] = (lock, users - 1)

    async def enrol(self, name: str) -> Enrolment:
        """An admin's enrolment of user ``name``: a new secret, confirmed at once (it
        replaces any other); the secret and URI are the admin's to hand over. NotFound when
        there is no such user."""
        secret = login.new_totp_secret(self.rng)
        await self.store.accounts.set_totp(name, secret)
        return Enrolment(secret, login.totp_uri(secret, name, self.issuer))

    async def hash_password(self, password: str) -> str:
        """The hash to store for a new password (checked: ValueError says what is wrong)."""
        login.check_new_password(password)
        async with self._hashing:
            return await asyncio.to_thread(self.passwords.hash, password)

    async def set_password(self, name: str, password: str) -> None:
        """Set user ``name``'s password (NotFound if there is no such user); this also
        unlocks the account."""
        await self.store.accounts.set_password(name, await self.hash_password(password))

    async def check_password(self, name: str, password: str, source: str | None) -> Outcome:
        """Step 1. ``name`` as typed (surrounding spaces and case do not matter: the
        outcome's ``user`` is the name to keep); ``source``: the client's address. An audit
        event ("signin", method "password") either way."""
        outcome = await self._check_password(name, password, source)
        await self._audit(outcome, "password", source)
        return outcome

    async def _audit(self, outcome: Outcome, method: str, source: str | None) -> None:
        """The audit event of a sign-in step. The user only when there is one by that name:
        what someone typed in the name field may be a password."""
        exists = outcome.passed or (
            USER_NAME.match(outcome.user) is not None
            and await self.store.accounts.get(outcome.user) is not None
        )
        try:
            await self.store.audit.record(
                "signin",
                result="ok" if outcome.passed else "refused",
                method=method,
                user=outcome.user if exists else None,
                source=source,
                detail=outcome.message or f"next step: {outcome.next.value}",
            )
        except Exception as e:  # the database failed: the sign-in's own outcome stands
            get_logger(component="signin").error(
                "could not write the audit log", audit_event="signin", error=str(e)
            )

    async def _check_password(self, name: str, password: str, source: str | None) -> Outcome:
        name = normalize_name(name)
        source_row = source_subject(source_key(source))
        if not USER_NAME.match(name):  # no user has it: no account row for it either
            async with self._one_at_a_time(source_row):
                return await self._failed_source(name, source)
        async with self._one_at_a_time(account_subject(name), source_row):
            return await self._check_password_now(name, password, source)

    async def _check_password_now(self, name: str, password: str, source: str | None) -> Outcome:
        refused = await self._refusal(name, source)
        if refused is not None:
            return refused
        account = await self.store.accounts.get(name)
        stored = None if account is None else account.password_hash
        async with self._hashing:
            check = await asyncio.to_thread(self._verify, stored, password)
        if account is None or not check.ok:
            await self._failed(name, source)
            return Outcome(Next.FAILED, name, WRONG_PASSWORD)
        if check.rehash:  # the same password (whatever today's rules), its count kept
            async with self._hashing:
                rehashed = await asyncio.to_thread(self.passwords.hash, password)
            await self.store.accounts.set_password(name, rehashed, unlock=False)
        if account.totp_confirmed:
            return Outcome(Next.TOTP, name)
        if not self.enrol_on_sign_in:  # the password was right: not counted as a failure
            return Outcome(Next.FAILED, name, NOT_ENROLLED)
        return Outcome(Next.ENROL, name)

    def _verify(self, stored: str | None, password: str) -> login.PasswordCheck:
        self.passwords.prepare()  # the first check of any name makes the stand-in
        return self.passwords.verify(stored, password)

    async def begin_enrolment(self, name: str) -> Enrolment | None:
        """A new TOTP secret for ``name`` (who passed the password step); None when they
        are enrolled already (ask for a code instead), or only an admin enrols."""
        if not self.enrol_on_sign_in:
            return None
        secret = login.new_totp_secret(self.rng)
        if not await self.store.accounts.begin_totp(name, secret):
            return None
        return Enrolment(secret, login.totp_uri(secret, name, self.issuer))

    async def check_totp(self, name: str, code: str, source: str | None) -> Outcome:
        """Step 2, for the ``user`` of a step 1 that passed; ``code`` as typed. An audit
        event ("signin", method "totp") either way."""
        outcome = await self._check_totp(name, code, source)
        await self._audit(outcome, "totp", source)
        return outcome

    async def _check_totp(self, name: str, code: str, source: str | None) -> Outcome:
        if not USER_NAME.match(name):
            return Outcome(Next.FAILED, name, NO_PASSWORD_STEP)
        async with self._one_at_a_time(account_subject(name), source_subject(source_key(source))):
            return await self._check_totp_now(name, code, source)

    async def _check_totp_now(self, name: str, code: str, source: str | None) -> Outcome:
        refused = await self._refusal(name, source)
        if refused is not None:
            return refused
        account = await self.store.accounts.get(name)
        if account is None or account.totp_secret is None:
            return Outcome(Next.FAILED, name, NO_PASSWORD_STEP)
        if not account.totp_confirmed and not self.enrol_on_sign_in:
            return Outcome(Next.FAILED, name, NOT_ENROLLED)  # a sign-in began it before
        now = self.store.clock()
        check = login.verify_totp(account.totp_secret, code, now, account.totp_last_step)
        if check.outcome is TotpOutcome.MALFORMED:
            return Outcome(Next.FAILED, name, check.message)  # a typing slip: not counted
        if check.ok:
            assert check.step is not None
            if await self.store.accounts.use_totp_step(name, account.totp_secret, check.step):
                await self.store.accounts.clear(account_subject(name))
                return Outcome(Next.SIGNED_IN, name)
            check = login.TotpCheck(TotpOutcome.REUSED)  # another request took the step
        await self._failed(name, source)
        return Outcome(Next.FAILED, name, check.message)

    async def _refusal(self, name: str | None, source: str | None) -> Outcome | None:
        accounts = self.store.accounts
        refused = login.refusal(
            Failures() if name is None else await accounts.failures(account_subject(name)),
            await accounts.failures(source_subject(source_key(source))),
            self.store.clock(),
            account_policy=self.account_policy,
            source_policy=self.source_policy,
        )
        if refused is None:
            return None
        return Outcome(Next.REFUSED, name or "", refused.message, refused.retry_after)

    async def _failed_source(self, name: str, source: str | None) -> Outcome:
        refused = await self._refusal(None, source)
        if refused is not None:
            return refused
        await self.store.accounts.fail(source_subject(source_key(source)), self.source_policy)
        return Outcome(Next.FAILED, name[:64], WRONG_PASSWORD)

    async def _failed(self, name: str, source: str | None) -> None:
        await self.store.accounts.fail(account_subject(name), self.account_policy)
        await self.store.accounts.fail(source_subject(source_key(source)), self.source_policy)
