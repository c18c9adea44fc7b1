"""wgpy/mesh/server/login.py: passwords, TOTP and the lockout as pure decisions.

The TOTP known answers are RFC 6238 appendix B's SHA-1 vectors (secret "12345678901234567890"
in ASCII), cut to their last 6 digits as 6-digit codes are (RFC 4226 section 5.3).
"""

from __future__ import annotations

import base64
import time
import urllib.parse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgpy.mesh.server import login
from wgpy.mesh.server.login import (
    ACCOUNT_POLICY,
    SOURCE_POLICY,
    Failures,
    LockoutPolicy,
    Passwords,
    TotpOutcome,
)

CHEAP = Passwords(time_cost=1, memory_cost=8, parallelism=1)
RFC_SECRET = base64.b32encode(b"12345678901234567890").decode()


def test_a_password_verifies_and_a_wrong_one_does_not() -> None:
    stored = CHEAP.hash("correct horse")
    assert stored.startswith("$argon2id$v=19$m=8,t=1,p=1$")
    assert "correct horse" not in stored
    assert CHEAP.hash("correct horse") != stored  # salted
    assert CHEAP.verify(stored, "correct horse") == login.PasswordCheck(True, rehash=False)
    assert not CHEAP.verify(stored, "correct horsE").ok
    assert not CHEAP.verify(stored, "").ok


def test_the_stand_in_is_made_once_and_ahead() -> None:
    passwords = Passwords(time_cost=1, memory_cost=8, parallelism=1)
    assert "_stand_in" not in vars(passwords)
    passwords.prepare()
    stand_in = vars(passwords)["_stand_in"]
    assert stand_in.startswith("$argon2id$")
    passwords.verify(None, "x")
    assert vars(passwords)["_stand_in"] == stand_in


def test_no_password_or_a_broken_hash_never_matches() -> None:
    assert not CHEAP.verify(None, "anything at all").ok
    assert not CHEAP.verify("not a hash", "not a hash").ok
    assert not CHEAP.verify("$argon2id$v=19$m=8,t=1,p=1$AAAA$BBBB", "x").ok


def test_passwords_are_nfkc_normalised() -> None:
    composed, decomposed = "caf\u00e9 au lait", "cafe\u0301 au lait"
    assert CHEAP.verify(CHEAP.hash(composed), decomposed).ok
    assert CHEAP.verify(CHEAP.hash(decomposed), composed).ok
    assert CHEAP.verify(CHEAP.hash("\uff21\uff22\uff23defgh"), "ABCdefgh").ok  # full-width
    assert login.check_new_password("cafe\u0301 au lait") == composed


def test_a_huge_password_is_not_hashed() -> None:
    stored = CHEAP.hash("correct horse")
    assert not CHEAP.verify(stored, "x" * (4 * login.MAX_PASSWORD + 1)).ok


def test_other_parameters_still_verify_and_ask_for_a_rehash() -> None:
    stronger = Passwords(time_cost=2, memory_cost=16, parallelism=1)
    stored = CHEAP.hash("correct horse")
    assert stronger.verify(stored, "correct horse") == login.PasswordCheck(True, rehash=True)


def test_default_parameters_are_rfc_9106_low_memory() -> None:
    stored = Passwords().hash("correct horse")
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("short", "at least 8 characters"),
        ("x" * 1025, "at most 1024 characters"),
        ("abcdefgh\0", "NUL"),
        (" " * 12, "only spaces"),
    ],
)
def test_new_passwords_are_checked(password: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        login.check_new_password(password)
    assert login.check_new_password("eight ch") == "eight ch"


@pytest.mark.parametrize(
    ("now", "code"),
    [(59, "287082"), (1111111109, "081804"), (1234567890, "005924"), (2000000000, "279037")],
)
def test_totp_known_answers(now: int, code: str) -> None:
    assert login.totp_code(RFC_SECRET, login.totp_step(now)) == code
    check = login.verify_totp(RFC_SECRET, code, now, None)
    assert check.ok and check.step == now // 30


def test_totp_window_is_one_step_either_side() -> None:
    now = 1234567890.5
    step = login.totp_step(now)
    for offset in (-1, 0, 1):
        code = login.totp_code(RFC_SECRET, step + offset)
        assert login.verify_totp(RFC_SECRET, code, now, None).step == step + offset
    for offset in (-2, 2):
        code = login.totp_code(RFC_SECRET, step + offset)
        assert login.verify_totp(RFC_SECRET, code, now, None).outcome is TotpOutcome.WRONG


def test_no_totp_code_is_accepted_twice() -> None:
    now = 1234567890.0
    step = login.totp_step(now)
    code = login.totp_code(RFC_SECRET, step)
    first = login.verify_totp(RFC_SECRET, code, now, None)
    assert first.ok
    again = login.verify_totp(RFC_SECRET, code, now + 5, first.step)
    assert again.outcome is TotpOutcome.REUSED and not again.ok
    assert "used already" in again.message
    # nor an earlier step's code once a later one was used
    earlier = login.totp_code(RFC_SECRET, step - 1)
    assert login.verify_totp(RFC_SECRET, earlier, now, step).outcome is TotpOutcome.REUSED
    # the next step's code is fine
    later = login.totp_code(RFC_SECRET, step + 1)
    assert login.verify_totp(RFC_SECRET, later, now + 30, step).step == step + 1


@pytest.mark.parametrize("code", ["", "12345", "1234567", "12a456", "١٢٣٤٥٦", "-12345"])
def test_malformed_totp_codes(code: str) -> None:
    check = login.verify_totp(RFC_SECRET, code, 1234567890.0, None)
    assert check.outcome is TotpOutcome.MALFORMED and "6 digits" in check.message


def test_totp_code_with_a_space_as_apps_show_it() -> None:
    assert login.verify_totp(RFC_SECRET, "005 924", 1234567890.0, None).ok


def test_new_totp_secret_and_uri() -> None:
    secret = login.new_totp_secret(lambda n: bytes(range(n)))
    assert secret == base64.b32encode(bytes(range(20))).decode()  # 32 characters, no padding
    assert len(login.new_totp_secret()) == 32 and login.new_totp_secret() != secret
    uri = urllib.parse.urlsplit(login.totp_uri(secret, "alice"))
    assert (uri.scheme, uri.netloc, urllib.parse.unquote(uri.path)) == (
        "otpauth",
        "totp",
        "/wgpy:alice",
    )
    query = urllib.parse.parse_qs(uri.query)
    assert query["secret"] == [secret] and query["issuer"] == ["wgpy"]
    # what the app will compute is what the server checks
    now = time.time()
    code = login.totp_code(secret, login.totp_step(now))
    assert login.verify_totp(secret, code, now, None).ok


POLICY = LockoutPolicy(free=3, lock_after=6, lock_for=900.0, forget_after=3600.0)


def fail(policy: LockoutPolicy, times: int, start: float = 1000.0, gap: float = 100.0) -> Failures:
    failures = Failures()
    for i in range(times):
        failures = policy.failed(failures, start + i * gap)
    return failures


def test_free_failures_then_slower_then_locked() -> None:
    now = 1000.0
    failures = Failures()
    waits = []
    for _ in range(6):
        failures = POLICY.failed(failures, now)
        waits.append(POLICY.wait(failures, now))
    assert waits[:2] == [0.0, 0.0]
    assert waits[2:5] == [1.0, 2.0, 4.0]  # doubling after the free ones
    assert failures.locked_until == now + 900.0 and waits[5] == 900.0
    # the wait runs down with time
    assert POLICY.wait(failures, now + 899.5) == pytest.approx(0.5)
    # and the lock's end starts the count again
    assert POLICY.wait(failures, now + 900.0) == 0.0
    assert POLICY.failed(failures, now + 900.0).count == 1


def test_the_delay_is_capped() -> None:
    policy = LockoutPolicy(free=1, lock_after=100, lock_for=1.0, forget_after=1e9, max_delay=30.0)
    failures = fail(policy, 20, gap=1.0)
    assert policy.wait(failures, failures.last_at) == 30.0


def test_a_quiet_spell_forgets_failures() -> None:
    failures = fail(POLICY, 5)
    assert POLICY.wait(failures, failures.last_at) > 0
    later = failures.last_at + 3600.0
    assert POLICY.wait(failures, later) == 0.0
    assert POLICY.forgettable(failures, later) and not POLICY.forgettable(failures, later - 1)
    assert POLICY.failed(failures, later).count == 1


def test_refusal_says_slow_down_or_locked_and_for_whom() -> None:
    now = 10_000.0
    assert login.refusal(Failures(), Failures(), now) is None
    slowed = fail(ACCOUNT_POLICY, ACCOUNT_POLICY.free + 1, start=now, gap=0.0)
    refused = login.refusal(slowed, Failures(), now)
    assert refused is not None and not refused.locked
    assert refused.retry_after == 2.0
    assert refused.message == (
        "too many failed sign-ins for this account; wait 2 seconds before trying again"
    )
    locked = fail(ACCOUNT_POLICY, ACCOUNT_POLICY.lock_after, start=now, gap=0.0)
    refused = login.refusal(locked, Failures(), now + 60)
    assert refused is not None and refused.locked and refused.retry_after == 840.0
    assert "this account: it is locked for 14 more minutes" in refused.message
    source = fail(SOURCE_POLICY, SOURCE_POLICY.lock_after, start=now, gap=0.0)
    refused = login.refusal(Failures(), source, now + 899.5)
    assert refused is not None and refused.locked
    assert "for this address: it is locked for 1 more minute;" in refused.message
    # the longer wait is the one said
    refused = login.refusal(slowed, source, now)
    assert refused is not None and "this address" in refused.message


def test_the_source_allows_more_failures_than_an_account() -> None:
    failures = fail(SOURCE_POLICY, ACCOUNT_POLICY.lock_after, gap=60.0)
    assert failures.locked_until == 0.0
    assert SOURCE_POLICY.free > ACCOUNT_POLICY.free


@settings(max_examples=300, deadline=None)
@given(code=st.text(max_size=12), now=st.floats(0, 2**40), last=st.none() | st.integers(0, 2**36))
def test_any_code_is_an_answer_never_an_exception(code: str, now: float, last: int | None) -> None:
    check = login.verify_totp(RFC_SECRET, code, now, last)
    assert check.ok == (check.step is not None)
    assert check.ok or check.message


@settings(max_examples=200, deadline=None)
@given(password=st.text(max_size=40))
def test_any_new_password_is_taken_or_refused_with_a_sentence(password: str) -> None:
    try:
        taken = login.check_new_password(password)
    except ValueError as e:
        assert str(e).startswith("a password ")
    else:
        assert login.MIN_PASSWORD <= len(taken) <= login.MAX_PASSWORD
