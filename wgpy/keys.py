"""WireGuard keys as text: base64 (``wg``, configuration files) and hex (the control socket).

Every key is exactly 32 bytes. Decoding is as strict as wireguard-tools: base64 must be the
canonical 44-character encoding (43 characters of the standard alphabet with the two unused low
bits of the last one zero, then ``=``), hex must be 64 hexadecimal digits (either case; encoding
writes lowercase). Nothing around the key is accepted, neither whitespace nor a ``0x`` prefix:
whoever reads keys from a file, a stream or a configuration line strips what its format allows
first. Errors are :class:`ValueError` whose message says what was expected and what was found,
worded to follow "... is not a valid WireGuard key: ".
"""

from __future__ import annotations

import base64
import binascii

__all__ = [
    "KEY_LEN",
    "KEY_LEN_BASE64",
    "KEY_LEN_HEX",
    "is_low_order",
    "key_from_base64",
    "key_from_hex",
    "key_to_base64",
    "key_to_hex",
]

KEY_LEN = 32
KEY_LEN_BASE64 = 44
KEY_LEN_HEX = 64

# The u-coordinates of the Curve25519 points of small order (the seven that libsodium
# refuses are these plus p and p + 1, which reduce to 0 and 1): a DH with any of them gives
# a result that does not depend on the private key (the all-zero output, or one of a
# handful), so such a "public key" is nobody's key. Computed as in RFC 7748 section 7 and
# checked against cryptography's X25519, which refuses each (tests/test_keys.py).
_P25519 = 2**255 - 19
_LOW_ORDER_U = frozenset(
    {
        0,  # order 2 (and the all-zero key)
        1,  # order 4
        _P25519 - 1,  # order 4
        325606250916557431795983626356110631294008115727848805560023387167927233504,  # order 8
        39382357235489614581723060781553021112529911719440698176882885853963445705823,  # order 8
    }
)

_BASE64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_BASE64_VALUE = {c: i for i, c in enumerate(_BASE64_ALPHABET)}
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")

_EXPECTED_BASE64 = f"expected {KEY_LEN_BASE64} characters of base64 encoding {KEY_LEN} bytes"
_EXPECTED_HEX = f"expected {KEY_LEN_HEX} hexadecimal digits encoding {KEY_LEN} bytes"


def _got(n: int) -> str:
    return f"got {n}" if n else "got none"


def _check_key(key: bytes) -> None:
    if len(key) != KEY_LEN:
        raise ValueError(f"expected a key of {KEY_LEN} bytes, got {len(key)}")


def key_to_base64(key: bytes) -> str:
    """The 44-character base64 of a 32-byte key, as ``wg`` prints it."""
    _check_key(key)
    return base64.b64encode(key).decode("ascii")


def key_from_base64(text: str) -> bytes:
    """The 32 bytes of a key in canonical base64; :class:`ValueError` says what is wrong."""
    if len(text) != KEY_LEN_BASE64:
        raise ValueError(f"{_EXPECTED_BASE64}, {_got(len(text))}")
    for position, char in enumerate(text[:-1], start=1):
        if char not in _BASE64_VALUE:
            raise ValueError(f"{_EXPECTED_BASE64}, but character {position} is {char!r}")
    if text[-1] != "=":
        raise ValueError(f"{_EXPECTED_BASE64} and ending in '=', but the last one is {text[-1]!r}")
    if _BASE64_VALUE[text[-2]] & 0b11:
        raise ValueError(
            f"{_EXPECTED_BASE64}, but character {KEY_LEN_BASE64 - 1} is {text[-2]!r}, "
            "which sets padding bits that must be zero"
        )
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as e:  # pragma: no cover - every malformed input is caught above
        raise ValueError(f"{_EXPECTED_BASE64}: {e}") from None


def key_to_hex(key: bytes) -> str:
    """The 64 lowercase hexadecimal digits of a 32-byte key, as the control socket writes it."""
    _check_key(key)
    return key.hex()


def key_from_hex(text: str) -> bytes:
    """The 32 bytes of a key in hex (either case); :class:`ValueError` says what is wrong."""
    if len(text) != KEY_LEN_HEX:
        raise ValueError(f"{_EXPECTED_HEX}, {_got(len(text))}")
    for position, char in enumerate(text, start=1):
        if char not in _HEX_DIGITS:
            raise ValueError(f"{_EXPECTED_HEX}, but character {position} is {char!r}")
    return bytes.fromhex(text)


def is_low_order(key: bytes) -> bool:
    """Whether a 32-byte X25519 public key is a point of small order, in any encoding: X25519
    ignores the top bit (RFC 7748) and reduces values of p or more modulo p, so each point
    has up to four spellings, all of which are caught."""
    _check_key(key)
    u = int.from_bytes(key, "little") & ((1 << 255) - 1)
    return u % _P25519 in _LOW_ORDER_U
