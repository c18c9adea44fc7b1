"""ICE's pure parts (wgpy.nat.ice): credentials, remote candidates from the map, the check
list, check messages and their authentication, role conflicts. RFC 8445 and aioice 0.13's
formulas are the reference; no sockets, no clock."""

from __future__ import annotations

import asyncio
import random
import struct

import pytest
from aioice import stun
from aioice.candidate import Candidate, candidate_priority

from wgpy.endpoint import RelayKey
from wgpy.nat.ice import (
    MAX_CANDIDATES,
    MAX_PEER_REFLEXIVE,
    NOMINATE_WAIT,
    RELAY_HOLD,
    Credentials,
    IceError,
    IceSession,
    PairState,
    RelayedCandidate,
    RemoteIce,
    authenticate_request,
    binding_request,
    error_response,
    form_pairs,
    parse_candidate,
    parse_remote,
    role_conflict,
    success_response,
)

LOCAL = Credentials("loca", "l" * 22)
REMOTE = Credentials("remo", "r" * 22)


def candidate(kind: str, host: str, port: int, base: str | None = None) -> Candidate:
    return Candidate(
        foundation=kind,
        component=1,
        transport="udp",
        priority=candidate_priority(1, kind),
        host=host,
        port=port,
        type=kind,
        related_address=base,
        related_port=51820 if base else None,
    )


# ---------------------------------------------------------------------- credentials


def test_generated_credentials_are_valid_and_fresh() -> None:
    rng = random.Random(1).randbytes
    a, b = Credentials.generate(rng), Credentials.generate(rng)
    assert len(a.ufrag) == 8 and len(a.pwd) == 24 and a != b
    assert "pwd=..." in repr(a) and a.pwd not in repr(a)  # a secret never reaches a log


@pytest.mark.parametrize(
    ("ufrag", "pwd", "reason"),
    [
        ("abc", "p" * 22, "bad_ufrag"),
        ("a" * 65, "p" * 22, "bad_ufrag"),
        ("ab:c", "p" * 22, "bad_ufrag"),  # a colon would split USERNAME wrongly
        ("abcd", "p" * 21, "bad_pwd"),
        ("abcd", "p" * 21 + " ", "bad_pwd"),
        ("abcd", "p" * 65, "bad_pwd"),
    ],
)
def test_bad_credentials_say_what_is_wrong(ufrag: str, pwd: str, reason: str) -> None:
    with pytest.raises(IceError) as e:
        Credentials(ufrag, pwd)
    assert e.value.reason == reason and str(e.value).startswith("an ICE")


# ---------------------------------------------------------------------- remote candidates


def test_a_candidate_from_the_map_comes_back_canonical() -> None:
    c = parse_candidate("1 1 UDP 2130706431 2001:DB8::1 41641 typ host")
    assert (c.host, c.port, c.type, c.transport) == ("2001:db8::1", 41641, "host", "udp")
    c = parse_candidate("f 1 udp 1694498815 203.0.113.5 3000 typ srflx raddr 10.0.0.2 rport 1")
    assert (c.host, c.port, c.type) == ("203.0.113.5", 3000, "srflx")


@pytest.mark.parametrize(
    "sdp",
    [
        "",
        "garbage",
        "1 1 udp 1 10.0.0.1 x typ host",
        "1 2 udp 1 10.0.0.1 4000 typ host",  # component 2
        "1 1 tcp 1 10.0.0.1 4000 typ host",
        "1 1 udp 1 10.0.0.1 4000 typ prflx",
        "1 1 udp 1 example.com 4000 typ host",  # names are never resolved
        "1 1 udp 1 0.0.0.0 4000 typ host",
        "1 1 udp 1 224.0.0.1 4000 typ host",
        "1 1 udp 1 255.255.255.255 4000 typ host",
        "1 1 udp 1 ff02::1 4000 typ host",
        "1 1 udp 1 10.0.0.1 0 typ host",
        "1 1 udp 1 10.0.0.1 65536 typ host",
        "1 1 udp 0 10.0.0.1 4000 typ host",
        "1 1 udp 1 10.0.0.1 4000 typ host generation " + "9" * 300,
    ],
)
def test_a_bad_candidate_is_refused_with_a_reason(sdp: str) -> None:
    with pytest.raises(IceError) as e:
        parse_candidate(sdp)
    assert e.value.reason == "bad_candidate"


def test_the_map_fields_keep_the_good_candidates_and_say_which_were_not() -> None:
    sdps = ["1 1 udp 5 10.0.0.1 4000 typ host", "nonsense"] + [
        f"1 1 udp 5 10.0.1.{n} 4000 typ host" for n in range(40)
    ]
    remote, errors = parse_remote("abcd", "p" * 22, sdps)
    assert len(remote.candidates) == MAX_CANDIDATES - 1 and len(errors) == 1
    assert remote == parse_remote("abcd", "p" * 22, sdps)[0]  # equal when the map is
    with pytest.raises(IceError):
        parse_remote("ab", "p" * 22, sdps)


# ---------------------------------------------------------------------- the check list


def test_one_pair_per_remote_candidate_and_local_socket_best_first() -> None:
    local = [
        candidate("host", "10.0.0.2", 51820),
        candidate("host", "172.17.0.1", 51820),  # the same socket: no pair of its own
        candidate("srflx", "198.51.100.2", 40000, base="10.0.0.2"),  # pruned to its base
        candidate("host", "fd00::2", 51820),
    ]
    remote = [
        candidate("srflx", "203.0.113.9", 41000, base="192.168.1.9"),
        candidate("host", "192.168.1.9", 51820),
        candidate("host", "fd00::9", 51820),
        candidate("relay", "192.0.2.50", 50000),
    ]
    pairs = form_pairs(local, remote, controlling=True)
    assert [(p.local.type, p.remote.type, p.address) for p in pairs] == [
        ("host", "host", ("192.168.1.9", 51820)),
        ("host", "host", ("fd00::9", 51820)),
        ("host", "srflx", ("203.0.113.9", 41000)),
        ("host", "relay", ("192.0.2.50", 50000)),
    ]
    assert [p.relayed for p in pairs] == [False, False, False, True]
    assert {p.base for p in pairs} == {"ipv4", "ipv6"}
    # the order is aioice's pair priority, as either role computes it
    assert pairs == sorted(pairs, key=lambda p: p.priority(False), reverse=True)


class _Link:
    """A relay link as the pairs see it: a name, and where sends would go."""

    name = "relay.example"

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def send(self, data: bytes, address: tuple[str, int]) -> None:
        self.sent.append((data, address))


def relayed(host: str, port: int, link: _Link) -> RelayedCandidate:
    return RelayedCandidate(
        link,
        foundation="relay",
        component=1,
        transport="udp",
        priority=candidate_priority(1, "relay"),
        host=host,
        port=port,
        type="relay",
    )


def test_a_local_relay_is_a_base_of_its_own() -> None:
    link = _Link()
    local = [candidate("host", "10.0.0.2", 51820), relayed("192.0.2.50", 50001, link)]
    remote = [candidate("host", "192.168.1.9", 51820)]
    pairs = form_pairs(local, remote, controlling=False)
    assert [(p.base, p.relayed) for p in pairs] == [
        ("ipv4", False),
        ("relay 192.0.2.50:50001", True),
    ]
    # the relayed pair's checks (and WireGuard) go through the link, to the peer's address
    assert pairs[0].key == ("192.168.1.9", 51820) and type(pairs[0].key) is tuple
    assert type(pairs[1].key) is RelayKey and pairs[1].key == ("192.168.1.9", 51820, link)
    assert pairs[1].relay_name == "relay.example" and pairs[0].relay_name is None


def test_a_relayed_candidate_without_its_link_makes_no_pair() -> None:
    """A relayed address this node cannot send from (no link: not its own allocation)."""
    local = [candidate("host", "10.0.0.2", 51820), candidate("relay", "192.0.2.50", 50001)]
    pairs = form_pairs(local, [candidate("host", "192.168.1.9", 51820)], controlling=False)
    assert [p.base for p in pairs] == ["ipv4"]


def test_no_pair_across_address_families() -> None:
    assert (
        form_pairs([candidate("host", "10.0.0.2", 1)], [candidate("host", "fd00::9", 2)], True)
        == []
    )


# ---------------------------------------------------------------------- messages


def check(nominate: bool = False, *, controlling: bool = True, pwd: str = LOCAL.pwd) -> bytes:
    """A check from REMOTE's side to LOCAL, signed with ``pwd`` (LOCAL's, when honest)."""
    request = binding_request(
        local=REMOTE,
        remote=Credentials(LOCAL.ufrag, pwd),
        controlling=controlling,
        tie_breaker=7,
        priority=candidate_priority(1, "prflx"),
        nominate=nominate,
    )
    return bytes(request)


def test_a_check_carries_what_rfc_8445_asks_and_authenticates() -> None:
    raw = check(nominate=True)
    message = stun.parse_message(raw)
    assert message.attributes["USERNAME"] == "loca:remo"
    assert message.attributes["ICE-CONTROLLING"] == 7
    assert "USE-CANDIDATE" in message.attributes and "FINGERPRINT" in message.attributes
    assert authenticate_request(message, LOCAL) == "remo"
    controlled = stun.parse_message(check(nominate=True, controlling=False))
    assert "USE-CANDIDATE" not in controlled.attributes  # only the controlling side nominates
    assert controlled.attributes["ICE-CONTROLLED"] == 7


def _reason(raw: bytes) -> str:
    with pytest.raises(IceError) as e:
        authenticate_request(stun.parse_message(raw), LOCAL)
    return e.value.reason


def test_checks_that_do_not_authenticate_are_refused() -> None:
    assert _reason(check(pwd="w" * 22)) == "bad_integrity"  # the wrong password
    other = Credentials("othr", LOCAL.pwd)
    raw = bytes(
        binding_request(local=REMOTE, remote=other, controlling=True, tie_breaker=1, priority=1)
    )
    assert _reason(raw) == "unknown_ufrag"
    unsigned = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    unsigned.attributes["USERNAME"] = "loca:remo"
    unsigned.attributes["PRIORITY"] = 1
    assert _reason(bytes(unsigned)) == "unsigned"
    del unsigned.attributes["USERNAME"]
    assert _reason(bytes(unsigned)) == "no_username"
    allocate = stun.Message(stun.Method.ALLOCATE, stun.Class.REQUEST)
    assert _reason(bytes(allocate)) == "not_binding"


def test_the_answers_are_signed_with_our_password() -> None:
    request = stun.parse_message(check())
    raw = success_response(request, ("203.0.113.9", 41000), LOCAL)
    response = stun.parse_message(raw)
    assert response.check_message_integrity(LOCAL.pwd.encode())
    assert response.transaction_id == request.transaction_id
    assert response.attributes["XOR-MAPPED-ADDRESS"] == ("203.0.113.9", 41000)
    assert "MESSAGE-INTEGRITY" in response.attributes
    assert not response.check_message_integrity(b"x" * 22)
    error = stun.parse_message(error_response(request, 487, "Role Conflict", LOCAL))
    assert error.message_class == stun.Class.ERROR
    assert error.attributes["ERROR-CODE"] == (487, "Role Conflict")
    assert len(raw) < 100  # no amplification: an answer no bigger than a check
    assert struct.unpack("!I", raw[4:8])[0] == stun.COOKIE


# ---------------------------------------------------------------------- roles


@pytest.mark.parametrize(
    ("controlling", "ours", "attribute", "theirs", "verdict"),
    [
        (True, 5, "ICE-CONTROLLED", 9, None),  # no conflict
        (False, 5, "ICE-CONTROLLING", 9, None),
        (True, 9, "ICE-CONTROLLING", 5, "reject"),  # both controlling: the larger stays
        (True, 5, "ICE-CONTROLLING", 9, "switch"),
        (False, 5, "ICE-CONTROLLED", 9, "reject"),  # both controlled: the larger switches
        (False, 9, "ICE-CONTROLLED", 5, "switch"),
    ],
)
def test_role_conflicts_are_resolved_by_the_tie_breaker(
    controlling: bool, ours: int, attribute: str, theirs: int, verdict: str | None
) -> None:
    request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    request.attributes[attribute] = theirs
    assert role_conflict(controlling, ours, request) == verdict


# ---------------------------------------------------------------------- a session's decisions


class NoTransport:
    """The decisions below send nothing."""

    async def request(self, *args: object, **kwargs: object) -> stun.Message:
        raise AssertionError("no check is sent in these tests")

    def send(self, data: bytes, endpoint: object) -> None:
        raise AssertionError("nothing is sent in these tests")


def session(remote: list[Candidate], controlling: bool = True) -> IceSession:
    loop = asyncio.new_event_loop()
    loop.close()  # never run: the session only decides here
    s = IceSession(
        NoTransport(),  # type: ignore[arg-type]
        local=LOCAL,
        remote=RemoteIce(REMOTE, tuple(remote)),
        local_candidates=lambda: [candidate("host", "10.0.0.2", 51820)],
        controlling=controlling,
        tie_breaker=1,
        on_selected=lambda pair: None,
        on_failed=lambda: None,
        loop=loop,
        log=None,
    )
    s.pairs = form_pairs(s.local_candidates(), remote, controlling)
    return s


HOST = candidate("host", "192.168.1.9", 51820)
SRFLX = candidate("srflx", "203.0.113.9", 41000)
RELAY = candidate("relay", "192.0.2.50", 50000)


def test_pairs_with_a_relayed_end_wait_before_their_first_check() -> None:
    s = session([RELAY])
    assert s._next_ordinary(RELAY_HOLD - 0.01) is None
    assert s._next_ordinary(RELAY_HOLD) is s.pairs[0]
    s = session([RELAY, HOST])
    assert s._next_ordinary(0.0) is not None and not s._next_ordinary(0.0).relayed  # type: ignore[union-attr]


def test_the_controlling_side_waits_for_better_pairs_before_nominating() -> None:
    s = session([HOST, SRFLX, RELAY])
    host, srflx, relay = s.pairs
    assert (host.remote.type, srflx.remote.type, relay.remote.type) == ("host", "srflx", "relay")
    # the relay answered first, direct pairs are still being checked. With no path yet,
    # traffic starts on the relay after NOMINATE_WAIT (a direct pair that answers later in
    # the round takes over); while a path is selected (a retry round), wait for them
    relay.state = PairState.SUCCEEDED
    srflx.state = PairState.IN_PROGRESS
    assert not s._ready_to_nominate(NOMINATE_WAIT - 0.01, first_valid=0.0)
    assert s._ready_to_nominate(NOMINATE_WAIT, first_valid=0.0)
    s.selected = relay
    assert not s._ready_to_nominate(10.0, first_valid=0.0)
    s.selected = None
    # a direct pair answered; a better one is still checked: wait NOMINATE_WAIT at most
    srflx.state = PairState.SUCCEEDED
    host.state = PairState.IN_PROGRESS
    assert not s._ready_to_nominate(NOMINATE_WAIT - 0.01, first_valid=0.0)
    assert s._ready_to_nominate(NOMINATE_WAIT, first_valid=0.0)
    # nothing better left to check: at once
    host.state = PairState.FAILED
    assert s._ready_to_nominate(0.0, first_valid=0.0)
    # the relay is all there is: nominated when the direct pairs failed
    s = session([HOST, RELAY])
    s.pairs[0].state, s.pairs[1].state = PairState.FAILED, PairState.SUCCEEDED
    assert s._ready_to_nominate(0.0, first_valid=0.0)


def test_addresses_learned_from_checks_are_bounded() -> None:
    """A peer that knows our password and forges sources gets at most MAX_PEER_REFLEXIVE
    addresses checked (sent to) per round."""
    s = session([HOST])
    request = stun.parse_message(check())
    learned = [s._pair_for((f"198.51.100.{n}", 4000), request) for n in range(20)]
    assert sum(p is not None for p in learned) == MAX_PEER_REFLEXIVE
    assert s._pair_for(("192.168.1.9", 51820), request) is s.pairs[0]  # a known one still is
    assert learned[0] is not None and learned[0].remote.type == "prflx"
    assert learned[0].remote.priority == candidate_priority(1, "prflx")
