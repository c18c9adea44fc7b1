"""ICE candidates and credentials as hostile input (wgpy/candidates.py): what aioice writes
passes unchanged, everything else is refused with a sentence, nothing raises anything else."""

from __future__ import annotations

import pytest
from aioice import Candidate
from hypothesis import given, settings
from hypothesis import strategies as st

from wgpy.candidates import (
    MAX_CANDIDATES,
    CandidateError,
    check_candidate,
    check_candidates,
    check_ice_pwd,
    check_ice_ufrag,
    parse_candidate,
)

HOST = "a1b2c3 1 udp 2130706431 192.0.2.1 41641 typ host"
SRFLX = "f00d 1 udp 1694498815 203.0.113.5 51820 typ srflx raddr 10.0.0.2 rport 41641"
RELAY = "abc 1 udp 16777215 2001:db8::7 49152 typ relay raddr 203.0.113.5 rport 5 generation 0"


def test_what_aioice_writes_passes_unchanged() -> None:
    for kind, host in (("host", "192.0.2.1"), ("srflx", "2001:db8::1"), ("relay", "10.1.2.3")):
        made = Candidate(
            foundation="0123456789abcdef0123456789abcdef",  # aioice's: an MD5 in hex
            component=1,
            transport="udp",
            priority=2130706431,
            host=host,
            port=41641,
            type=kind,
            related_address="10.0.0.2" if kind != "host" else None,
            related_port=5 if kind != "host" else None,
        )
        assert check_candidate(made.to_sdp()) == made.to_sdp()
    for text in (HOST, SRFLX, RELAY):
        assert check_candidate(text) == text
        assert parse_candidate(text).to_sdp() == text


def test_canonical_form() -> None:
    assert (
        check_candidate("x 1 UDP 1 2001:DB8:0:0::1 9 typ host")
        == "x 1 udp 1 2001:db8::1 9 typ host"
    )
    assert check_candidates([HOST, SRFLX, HOST]) == (HOST, SRFLX)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (5, "must be a string"),
        ("x" * 257, "longer than 256"),
        ("a 1 udp 1 192.0.2.1 9 typ", "FOUNDATION 1 udp"),
        ("a 1 udp 1 192.0.2.1 9 typ host raddr", "FOUNDATION 1 udp"),
        ("a  1 udp 1 192.0.2.1 9 typ host", "FOUNDATION 1 udp"),
        ("a 1 udp 1 192.0.2.1 9 typ host\n", "typ host"),
        ("a\tb 1 udp 1 192.0.2.1 9 typ host", "foundation"),
        ("a 2 udp 1 192.0.2.1 9 typ host", "component is '2'"),
        ("a \u0661 udp 1 192.0.2.1 9 typ host", "component"),  # an Arabic-Indic 1
        ("a 1 tcp 1 192.0.2.1 9 typ host tcptype active", "transport is 'tcp'"),
        ("a 1 udp 0 192.0.2.1 9 typ host", "priority"),
        ("a 1 udp -1 192.0.2.1 9 typ host", "priority"),
        ("a 1 udp 2147483648 192.0.2.1 9 typ host", "priority"),
        ("a 1 udp 1 relay.example 9 typ host", "not an IP address (names are not taken)"),
        ("a 1 udp 1 fe80::1%eth0 9 typ host", "not an IP address"),
        ("a 1 udp 1 0.0.0.0 9 typ host", "not an address a peer can send to"),
        ("a 1 udp 1 :: 9 typ host", "not an address a peer can send to"),
        ("a 1 udp 1 224.0.0.1 9 typ host", "not an address a peer can send to"),
        ("a 1 udp 1 255.255.255.255 9 typ host", "not an address a peer can send to"),
        ("a 1 udp 1 192.0.2.1 0 typ host", "port"),
        ("a 1 udp 1 192.0.2.1 65536 typ host", "port"),
        ("a 1 udp 1 192.0.2.1 +9 typ host", "port"),
        ("a 1 udp 1 192.0.2.1 9 type host", "typ host"),
        ("a 1 udp 1 192.0.2.1 9 typ prflx", "typ host"),
        ("a 1 udp 1 192.0.2.1 9 typ host raddr name.example", "related address"),
        ("a 1 udp 1 192.0.2.1 9 typ host rport 70000", "related port"),
        ("a 1 udp 1 192.0.2.1 9 typ host generation x", "generation"),
        ("a 1 udp 1 192.0.2.1 9 typ host rport 1 rport 2", "'rport' twice"),
        ("a 1 udp 1 192.0.2.1 9 typ host network-id 1", "'network-id'"),
    ],
)
def test_hostile_candidates_are_refused_with_a_reason(text: object, says: str) -> None:
    with pytest.raises(CandidateError) as e:
        check_candidate(text)
    assert says in str(e.value)


def test_lists() -> None:
    assert check_candidates([]) == ()
    with pytest.raises(CandidateError, match="must be a list"):
        check_candidates(HOST)
    with pytest.raises(CandidateError, match="holds 17 candidates; at most 16"):
        check_candidates([HOST] * (MAX_CANDIDATES + 1))


def test_credentials() -> None:
    assert check_ice_ufrag("aB3+") == "aB3+"
    assert check_ice_pwd("a/" * 11) == "a/" * 11
    for bad in ("abc", "a" * 65, "abc d", "abcé", "abc=", None, 1234):
        with pytest.raises(CandidateError):
            check_ice_ufrag(bad)
    for bad in ("a" * 21, "a" * 65, "a" * 21 + "-"):
        with pytest.raises(CandidateError):
            check_ice_pwd(bad)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=300))
def test_any_text_is_a_candidate_or_a_candidate_error(text: str) -> None:
    try:
        out = check_candidate(text)
    except CandidateError:
        return
    assert check_candidate(out) == out


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(["a", "1", "udp", "typ", "host", "raddr", "rport", "generation"]),
            st.sampled_from(["192.0.2.1", "::1", "0", "65535", "99999999999", "\u0663", "+1"]),
            st.text(max_size=8),
        ),
        min_size=6,
        max_size=14,
    )
)
def test_candidate_shaped_text_never_raises_anything_else(tokens: list[str]) -> None:
    text = " ".join(tokens)
    try:
        out = check_candidate(text)
    except CandidateError:
        return
    assert check_candidate(out) == out
