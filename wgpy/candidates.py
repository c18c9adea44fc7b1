"""ICE candidates and credentials as nodes report them and the map carries them: checked as
hostile input, written in one canonical form. The server checks what a node reports; a node
checks again what the map gives it (a peer's candidates say where to send traffic).

A candidate is the candidate-attribute of RFC 8839 without ``candidate:``, as aioice's
``Candidate.to_sdp()`` writes it: ``FOUNDATION 1 udp PRIORITY IP PORT typ host|srflx|relay
[raddr IP] [rport PORT] [generation N]``. Only component 1 (WireGuard's socket) and UDP;
the address is an IP literal (a name would make a peer resolve what another node chose), not
unspecified or multicast. ``ice_ufrag`` and ``ice_pwd`` are ice-chars (RFC 8445: letters,
digits, "+" and "/"), 4 to 64 and 22 to 64 of them; ``ice_pwd`` only as nodes before per-pair
keys send it (the server checks it and keeps nothing of it: :mod:`wgpy.nat.ice`).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from aioice import Candidate

__all__ = [
    "MAX_CANDIDATES",
    "CandidateError",
    "check_candidate",
    "check_candidates",
    "check_ice_pwd",
    "check_ice_ufrag",
    "parse_candidate",
]

MAX_CANDIDATES = 16
MAX_CANDIDATE_LENGTH = 256  # characters
TYPES = ("host", "srflx", "relay")
UFRAG_LENGTH = (4, 64)  # RFC 8445 allows 256; nodes make 4 to 8 (aioice: 4)
PWD_LENGTH = (22, 64)  # RFC 8445 allows 256; aioice makes 22
MAX_PRIORITY = 2**31 - 1

_ICE_CHARS = re.compile(r"[A-Za-z0-9+/]+")
_NUMBER = re.compile(r"[0-9]{1,10}")


class CandidateError(ValueError):
    """A candidate, ufrag or password that cannot be used; the message says what is wrong."""


def _number(text: str, what: str, low: int, high: int) -> int:
    if not _NUMBER.fullmatch(text) or not low <= int(text) <= high:
        raise CandidateError(f"its {what} {text[:16]!r} is not a number from {low} to {high}")
    return int(text)


def _ip(text: str, what: str, *, peer: bool) -> str:
    try:
        if "%" in text:  # a zone (fe80::1%eth0) means nothing to another node
            raise ValueError(text)
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise CandidateError(
            f"its {what} {text[:64]!r} is not an IP address (names are not taken)"
        ) from None
    if peer and (ip.is_unspecified or ip.is_multicast or text == "255.255.255.255"):
        raise CandidateError(f"its {what} {text} is not an address a peer can send to")
    return str(ip)


def parse_candidate(text: Any) -> Candidate:
    """The candidate ``text`` describes, checked; CandidateError says what is wrong."""
    if not isinstance(text, str):
        raise CandidateError("a candidate must be a string")
    if len(text) > MAX_CANDIDATE_LENGTH:
        raise CandidateError(f"a candidate is longer than {MAX_CANDIDATE_LENGTH} characters")
    bits = text.split(" ")
    if len(bits) < 8 or len(bits) % 2 or "" in bits:
        raise CandidateError(
            "a candidate must be 'FOUNDATION 1 udp PRIORITY IP PORT typ TYPE' with optional "
            "'raddr IP', 'rport PORT', 'generation N', separated by single spaces"
        )
    foundation, component, transport, priority, host, port, typ, kind = bits[:8]
    if not _ICE_CHARS.fullmatch(foundation) or len(foundation) > 32:
        raise CandidateError("its foundation must be 1 to 32 letters, digits, '+' or '/'")
    if component != "1":
        raise CandidateError(f"its component is {component[:16]!r}; only 1 (WireGuard's) is taken")
    if transport.lower() != "udp":
        raise CandidateError(f"its transport is {transport[:16]!r}; only udp is taken")
    _number(priority, "priority", 1, MAX_PRIORITY)
    host = _ip(host, "address", peer=True)
    _number(port, "port", 1, 65535)
    if typ != "typ" or kind not in TYPES:
        raise CandidateError("its type must be 'typ host', 'typ srflx' or 'typ relay'")
    seen: set[str] = set()
    for key, value in zip(bits[8::2], bits[9::2], strict=True):
        if key in seen:
            raise CandidateError(f"it gives {key!r} twice")
        seen.add(key)
        if key == "raddr":
            _ip(value, "related address", peer=False)
        elif key == "rport":
            _number(value, "related port", 0, 65535)
        elif key == "generation":
            _number(value, "generation", 0, 2**32 - 1)
        else:
            raise CandidateError(
                f"it has {key[:32]!r}; the extensions taken are raddr, rport and generation"
            )
    try:
        candidate = Candidate.from_sdp(text)
    except ValueError as e:  # checked above; aioice has the last word
        raise CandidateError(f"aioice cannot read it: {e}") from None
    candidate.transport = "udp"
    candidate.host = host
    if candidate.related_address is not None:
        candidate.related_address = str(ipaddress.ip_address(candidate.related_address))
    return candidate


def check_candidate(text: Any) -> str:
    """``text`` in canonical form (as ``Candidate.to_sdp()`` writes it); CandidateError."""
    return str(parse_candidate(text).to_sdp())


def check_candidates(value: Any) -> tuple[str, ...]:
    """A list of at most MAX_CANDIDATES candidates, canonical, duplicates dropped, order
    kept. The messages of the list's own errors start with a verb (see _ice_chars)."""
    if not isinstance(value, list):
        raise CandidateError(f"must be a list of at most {MAX_CANDIDATES} candidates")
    if len(value) > MAX_CANDIDATES:
        raise CandidateError(
            f"holds {len(value)} candidates; at most {MAX_CANDIDATES} are taken (the best)"
        )
    out: list[str] = []
    for text in value:
        candidate = check_candidate(text)
        if candidate not in out:
            out.append(candidate)
    return tuple(out)


def _ice_chars(value: Any, length: tuple[int, int]) -> str:
    """The messages start with a verb: the caller puts the field's name before them."""
    low, high = length
    if not isinstance(value, str) or not low <= len(value) <= high:
        raise CandidateError(f"must be a string of {low} to {high} characters")
    if not _ICE_CHARS.fullmatch(value):
        raise CandidateError("may hold only letters, digits, '+' and '/'")
    return value


def check_ice_ufrag(value: Any) -> str:
    return _ice_chars(value, UFRAG_LENGTH)


def check_ice_pwd(value: Any) -> str:
    return _ice_chars(value, PWD_LENGTH)
