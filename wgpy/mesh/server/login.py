"""Signing in as a person: the decisions, without I/O.

- Passwords are NFKC-normalised (NIST SP 800-63B 5.1.1.2: the same password typed on another
  keyboard or system matches) and hashed with argon2id (argon2-cffi; RFC 9106's second
  recommended parameter set by default: 64 MiB, 3 passes, 4 lanes, about 0.17 s here).
  Hashing and checking are CPU work: the server runs :meth:`Passwords.hash` and
  :meth:`Passwords.verify` in a thread. A name with no password is checked against a
  stand-in hash, so the time taken does not tell whether the account exists.
- TOTP is RFC 6238 (pyotp): 30 s steps, 6 digits, a window of one step either side, and no
  code accepted twice: the step a code matched is stored and only later steps are accepted.
- Failures slow down and then lock, per account and per source address (auth.source_key):
  :class:`LockoutPolicy` turns the recorded :class:`Failures` into the seconds to wait before
  the next try, and :func:`refusal` into the sentence that says so. Failures count for names
  that do not exist too, so the answer never tells whether an account exists.

Time (``now``, seconds since the epoch) and randomness (``rng``) are arguments; the store
keeps the state (store/accounts.py); the web pages and the admin API call these.
"""

from __future__ import annotations

import base64
import enum
import hmac
import math
import os
import unicodedata
from dataclasses import dataclass, field
from functools import cached_property

import argon2
import pyotp

from .auth import Rng

MIN_PASSWORD = 8  # characters
MAX_PASSWORD = 1024  # characters: argon2 takes any length, a request body should not

TOTP_STEP = 30  # seconds (RFC 6238's default; what authenticator apps assume)
TOTP_DIGITS = 6
TOTP_WINDOW = 1  # steps accepted either side of the current one (clock drift, slow typing)
TOTP_SECRET_BYTES = 20  # 160 bits, as RFC 4226 recommends for HMAC-SHA1
TOTP_ISSUER = "wgpy"


# ------------------------------------------------------------------------------ passwords


def normalize_password(password: str) -> str:
    """The form a password is hashed and checked in (NFKC)."""
    return unicodedata.normalize("NFKC", password)


def check_new_password(password: str) -> str:
    """``password`` if it may be set; ValueError with the sentence to show otherwise."""
    password = normalize_password(password)
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"a password must be at least {MIN_PASSWORD} characters long")
    if len(password) > MAX_PASSWORD:
        raise ValueError(f"a password must be at most {MAX_PASSWORD} characters long")
    if "\0" in password:
        raise ValueError("a password cannot contain a NUL character")
    if not password.strip():
        raise ValueError("a password cannot be only spaces")
    return password


@dataclass(frozen=True)
class PasswordCheck:
    ok: bool
    rehash: bool = False  # the hash was made with other parameters: store a new one


@dataclass(frozen=True)
class Passwords:
    """argon2id with these parameters (the defaults: RFC 9106's low-memory set). Tests use
    cheap ones; a stored hash names its own parameters, so a change of them still verifies
    old hashes and asks for a rehash."""

    time_cost: int = 3
    memory_cost: int = 65536  # KiB
    parallelism: int = 4
    _hasher: argon2.PasswordHasher = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        hasher = argon2.PasswordHasher(
            time_cost=self.time_cost,
            memory_cost=self.memory_cost,
            parallelism=self.parallelism,
            type=argon2.Type.ID,
        )
        object.__setattr__(self, "_hasher", hasher)

    def hash(self, password: str) -> str:
        """The argon2id hash (PHC string, with its salt and parameters) of ``password``."""
        return self._hasher.hash(normalize_password(password))

    @cached_property
    def _stand_in(self) -> str:
        return self._hasher.hash("wgpy: a stand-in for an account without a password")

    def prepare(self) -> None:
        """Make the stand-in hash now, so that the first check of a name without a password
        takes no longer than one with (call it where verify is called: in the thread)."""
        self._stand_in  # noqa: B018 - computed and kept

    def verify(self, stored: str | None, password: str) -> PasswordCheck:
        """Whether ``password`` matches ``stored`` (None: no password set: never, after the
        same work). A stored value that is not an argon2 hash never matches."""
        if stored is None:
            self._matches(self._stand_in, password)
            return PasswordCheck(False)
        if not self._matches(stored, password):
            return PasswordCheck(False)
        return PasswordCheck(True, rehash=self._hasher.check_needs_rehash(stored))

    def _matches(self, stored: str, password: str) -> bool:
        if len(password) > 4 * MAX_PASSWORD:  # NFKC may lengthen a string, not this much
            return False
        try:
            return self._hasher.verify(stored, normalize_password(password))
        except argon2.exceptions.VerificationError:
            return False
        except argon2.exceptions.InvalidHashError:
            return False


# ----------------------------------------------------------------------------------- TOTP


def new_totp_secret(rng: Rng = os.urandom) -> str:
    """A fresh TOTP secret: 160 random bits in base32 without padding (as apps take it)."""
    return base64.b32encode(rng(TOTP_SECRET_BYTES)).decode("ascii").rstrip("=")


def totp_uri(secret: str, account: str, issuer: str = TOTP_ISSUER) -> str:
    """The ``otpauth://totp/...`` URI an authenticator app reads from a QR code."""
    return pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_STEP).provisioning_uri(
        name=account, issuer_name=issuer
    )


def totp_step(now: float) -> int:
    """The RFC 6238 time step ``now`` falls in."""
    return math.floor(now) // TOTP_STEP


def totp_code(secret: str, step: int) -> str:
    """The code of ``step`` (what an authenticator app shows during it)."""
    return pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_STEP).at(step * TOTP_STEP)


class TotpOutcome(enum.Enum):
    OK = "ok"
    MALFORMED = "malformed"  # not 6 digits: not counted as a failure
    WRONG = "wrong"
    REUSED = "reused"  # matched a step already used: refused, counted as a failure


@dataclass(frozen=True)
class TotpCheck:
    outcome: TotpOutcome
    step: int | None = None  # OK: the step the code matched; store it as the last used

    @property
    def ok(self) -> bool:
        return self.outcome is TotpOutcome.OK

    @property
    def message(self) -> str:
        """The sentence for a refused code."""
        return _TOTP_MESSAGES.get(self.outcome, "")


_TOTP_MESSAGES = {
    TotpOutcome.MALFORMED: "a code is the 6 digits your authenticator app shows",
    TotpOutcome.WRONG: "that code is not right; check the clock of the device that shows it",
    TotpOutcome.REUSED: "that code was used already; wait for the next one",
}


def verify_totp(secret: str, code: str, now: float, last_step: int | None) -> TotpCheck:
    """Check ``code`` against the steps around ``now``; a step at or before ``last_step``
    (the one last accepted) is refused as reused."""
    code = code.replace(" ", "")
    if len(code) != TOTP_DIGITS or not code.isascii() or not code.isdigit():
        return TotpCheck(TotpOutcome.MALFORMED)
    current = totp_step(now)
    reused = False
    for step in range(current - TOTP_WINDOW, current + TOTP_WINDOW + 1):
        if hmac.compare_digest(totp_code(secret, step), code):
            if last_step is not None and step <= last_step:
                reused = True
                continue
            return TotpCheck(TotpOutcome.OK, step)
    return TotpCheck(TotpOutcome.REUSED if reused else TotpOutcome.WRONG)


# -------------------------------------------------------------------------- failures


@dataclass(frozen=True)
class Failures:
    """Failed sign-ins of one account or one source, as the store keeps them."""

    count: int = 0
    last_at: float = 0.0  # the last failure
    locked_until: float = 0.0  # 0.0: not locked


@dataclass(frozen=True)
class LockoutPolicy:
    """``free`` failures cost nothing; each one after waits twice as long as the last
    (``delay``, ``2 * delay``, ... up to ``max_delay``) before the next try; the
    ``lock_after``-th locks for ``lock_for`` seconds. A quiet ``forget_after`` seconds since
    the last failure, or the end of a lock, starts the count again."""

    free: int
    lock_after: int
    lock_for: float
    forget_after: float
    delay: float = 1.0
    max_delay: float = 30.0

    def current(self, failures: Failures, now: float) -> Failures:
        """``failures`` as they count at ``now`` (forgotten after a quiet spell or a lock)."""
        if failures.locked_until and now >= failures.locked_until:
            return Failures()
        if failures.count and now - failures.last_at >= self.forget_after:
            return Failures()
        return failures

    def wait(self, failures: Failures, now: float) -> float:
        """The seconds before the next try may be checked (0.0: now)."""
        failures = self.current(failures, now)
        if failures.locked_until:
            return failures.locked_until - now
        if failures.count < self.free:
            return 0.0
        delay = min(self.max_delay, self.delay * 2.0 ** (failures.count - self.free))
        return max(0.0, failures.last_at + delay - now)

    def failed(self, failures: Failures, now: float) -> Failures:
        """``failures`` with one more at ``now``."""
        count = self.current(failures, now).count + 1
        locked_until = now + self.lock_for if count >= self.lock_after else 0.0
        return Failures(count, now, locked_until)

    def forgettable(self, failures: Failures, now: float) -> bool:
        """Whether the record no longer counts (the store may delete it)."""
        return self.current(failures, now) == Failures()


# Per account: 3 free tries, then 1, 2, 4, ... s apart; the 10th failure in a row locks the
# account for 15 minutes. Per source: 10 free, the 50th locks (many people behind one NAT).
ACCOUNT_POLICY = LockoutPolicy(free=3, lock_after=10, lock_for=900.0, forget_after=3600.0)
SOURCE_POLICY = LockoutPolicy(free=10, lock_after=50, lock_for=900.0, forget_after=3600.0)


@dataclass(frozen=True)
class Refusal:
    """A sign-in refused before its password or code is checked."""

    locked: bool  # False: slowed down
    retry_after: float  # seconds
    message: str


def refusal(
    account: Failures,
    source: Failures,
    now: float,
    *,
    account_policy: LockoutPolicy = ACCOUNT_POLICY,
    source_policy: LockoutPolicy = SOURCE_POLICY,
) -> Refusal | None:
    """Whether to refuse a try for this account from this source at ``now``, and why; None:
    check the password or code. The longer of the two waits is the one said."""
    waits = [
        (account_policy.wait(account, now), account_policy.current(account, now), "this account"),
        (source_policy.wait(source, now), source_policy.current(source, now), "this address"),
    ]
    wait, failures, whose = max(waits, key=lambda w: w[0])
    if wait <= 0:
        return None
    if failures.locked_until:
        minutes = math.ceil(wait / 60)
        unit = "minute" if minutes == 1 else "minutes"
        return Refusal(
            True,
            wait,
            f"too many failed sign-ins for {whose}: it is locked for {minutes} more {unit}; "
            "try again then, or ask an admin to set a new password",
        )
    seconds = math.ceil(wait)
    unit = "second" if seconds == 1 else "seconds"
    return Refusal(
        False,
        wait,
        f"too many failed sign-ins for {whose}; wait {seconds} {unit} before trying again",
    )
