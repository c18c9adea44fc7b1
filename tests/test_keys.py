"""wgpy/keys.py: which X25519 public keys are points of small order.

The low-order points are the ones RFC 7748 section 7 and libsodium's blocklist name; each is
cross-checked here against cryptography's X25519, which refuses a DH whose result is all
zeros. Every encoding counts: X25519 ignores the top bit and reduces values of p or more.
"""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from hypothesis import given
from hypothesis import strategies as st

from wgpy.keys import is_low_order

P = 2**255 - 19
LOW_ORDER_U = [
    0,
    1,
    P - 1,
    325606250916557431795983626356110631294008115727848805560023387167927233504,
    39382357235489614581723060781553021112529911719440698176882885853963445705823,
]


def encodings(u: int) -> list[bytes]:
    """Every 32-byte spelling of the u-coordinate ``u``: with and without the top bit, and
    u + p when that still fits in 255 bits."""
    values = [u, u | 1 << 255]
    if u + P < 1 << 255:
        values += [u + P, (u + P) | 1 << 255]
    return [v.to_bytes(32, "little") for v in values]


def dh_refused(public: bytes) -> bool:
    try:
        X25519PrivateKey.generate().exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError:
        return True
    return False


@pytest.mark.parametrize("u", LOW_ORDER_U)
def test_every_encoding_of_a_low_order_point_is_caught(u: int) -> None:
    for key in encodings(u):
        assert is_low_order(key), key.hex()
        assert dh_refused(key), key.hex()  # the list is right: no usable DH with it


def test_the_seven_of_libsodiums_blocklist_are_caught() -> None:
    blocklist = [
        "00" * 32,
        "01" + "00" * 31,
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
        "ec" + "ff" * 30 + "7f",
        "ed" + "ff" * 30 + "7f",
        "ee" + "ff" * 30 + "7f",
    ]
    assert all(is_low_order(bytes.fromhex(k)) for k in blocklist)


@given(st.binary(min_size=32, max_size=32))
def test_other_keys_pass_when_cryptography_accepts_them(key: bytes) -> None:
    assert is_low_order(key) == dh_refused(key)


def test_real_public_keys_pass() -> None:
    for _ in range(50):
        public = X25519PrivateKey.from_private_bytes(os.urandom(32)).public_key()
        assert not is_low_order(public.public_bytes_raw())


def test_a_key_of_the_wrong_length_is_an_error() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        is_low_order(b"\0" * 31)
