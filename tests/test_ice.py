"""ICE's pure parts (wgpy.nat.ice): ufrags and the per-pair keys, remote candidates from the
map, the check list, check messages and their authentication, role conflicts. RFC 8445 and
aioice 0.13's formulas are the reference; no sockets, no clock."""

from __future__ import annotations

import asyncio
import os
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
    IceError,
    IceSession,
    PairKeys,
    PairState,
    RelayedCandidate,
    RemoteIce,
    authenticate_request,
    binding_request,
    check_ufrag,
    check_username,
    derive_pair_keys,
    error_response,
    form_pairs,
    new_ufrag,
    parse_candidate,
    parse_remote,
    role_conflict,
    success_response,
)
from wgpy.protocol.crypto import dh, generate_private_key, public_key

LOCAL_PRIVATE = bytes(range(1, 33))
REMOTE_PRIVATE = bytes(range(33, 65))
OTHER_PRIVATE = bytes(range(65, 97))  # a third node: another peer of LOCAL, say


def pair_keys(
    mine: bytes, theirs: bytes, my_ufrag: str = "loca", their_ufrag: str = "remo"
) -> PairKeys:
    """The keys ``mine`` derives for checks with the owner of ``theirs`` (private keys)."""
    return derive_pair_keys(
        dh(mine, public_key(theirs)),
        local_public=public_key(mine),
        remote_public=public_key(theirs),
        local_ufrag=my_ufrag,
        remote_ufrag=their_ufrag,
    )


LOCAL = pair_keys(LOCAL_PRIVATE, REMOTE_PRIVATE)  # LOCAL's keys with REMOTE
REMOTE = pair_keys(REMOTE_PRIVATE, LOCAL_PRIVATE, "remo", "loca")  # REMOTE's with LOCAL


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


def test_generated_ufrags_are_valid_and_fresh() -> None:
    rng = random.Random(1).randbytes
    a, b = new_ufrag(rng), new_ufrag(rng)
    assert len(a) == 8 and a != b and check_ufrag(a) == a


@pytest.mark.parametrize("ufrag", ["abc", "a" * 65, "ab:c", "abc ", ""])
def test_a_bad_ufrag_says_what_is_wrong(ufrag: str) -> None:
    with pytest.raises(IceError) as e:
        check_ufrag(ufrag)
    assert e.value.reason == "bad_ufrag" and str(e.value).startswith("an ICE")
    with pytest.raises(IceError):
        RemoteIce(ufrag, ())


def test_both_nodes_of_a_pair_derive_the_same_keys_one_per_direction() -> None:
    # LOCAL checks REMOTE with the key REMOTE checks incoming checks with, and back
    assert LOCAL.outbound == REMOTE.inbound and LOCAL.inbound == REMOTE.outbound
    assert LOCAL.inbound != LOCAL.outbound  # a check cannot be reflected back as one of ours
    assert len(LOCAL.inbound) == 32
    assert (LOCAL.local_ufrag, LOCAL.remote_ufrag) == ("loca", "remo")
    # secrets never reach a log
    assert LOCAL.inbound.hex() not in repr(LOCAL) and str(LOCAL.inbound) not in repr(LOCAL)


def test_other_pairs_ufrags_and_keys_give_other_keys() -> None:
    keys = {LOCAL.inbound, LOCAL.outbound}
    # another pair of nodes: LOCAL with OTHER, REMOTE with OTHER
    for mine, theirs in [(LOCAL_PRIVATE, OTHER_PRIVATE), (REMOTE_PRIVATE, OTHER_PRIVATE)]:
        other = pair_keys(mine, theirs)
        assert not keys & {other.inbound, other.outbound}
    # a new ufrag on either side (a restart): fresh keys
    for ufrags in [("locb", "remo"), ("loca", "remb"), ("remo", "loca")]:
        other = pair_keys(LOCAL_PRIVATE, REMOTE_PRIVATE, *ufrags)
        assert not keys & {other.inbound, other.outbound}
    # the same DH with the public keys swapped (info binds who is who): other keys
    swapped = derive_pair_keys(
        dh(LOCAL_PRIVATE, public_key(REMOTE_PRIVATE)),
        local_public=public_key(REMOTE_PRIVATE),
        remote_public=public_key(LOCAL_PRIVATE),
        local_ufrag="loca",
        remote_ufrag="remo",
    )
    assert not keys & {swapped.inbound, swapped.outbound}


def test_a_third_node_cannot_derive_a_pair_s_keys() -> None:
    """OTHER knows both public keys and both ufrags (its map shows them) and has a key pair
    of its own: whatever DH it can compute gives no key of the pair LOCAL-REMOTE."""
    keys = {LOCAL.inbound, LOCAL.outbound}
    local_pub, remote_pub = public_key(LOCAL_PRIVATE), public_key(REMOTE_PRIVATE)
    for shared in [
        dh(OTHER_PRIVATE, local_pub),
        dh(OTHER_PRIVATE, remote_pub),
        dh(generate_private_key(os.urandom), local_pub),
        bytes(32)[:-1] + b"\x01",
    ]:
        for local, remote in [(local_pub, remote_pub), (remote_pub, local_pub)]:
            for ufrags in [("loca", "remo"), ("remo", "loca")]:
                guess = derive_pair_keys(
                    shared,
                    local_public=local,
                    remote_public=remote,
                    local_ufrag=ufrags[0],
                    remote_ufrag=ufrags[1],
                )
                assert not keys & {guess.inbound, guess.outbound}


def test_no_keys_from_an_all_zero_dh() -> None:
    """A low-order "public key" gives the all-zero DH, which anybody can compute."""
    with pytest.raises(IceError) as e:
        derive_pair_keys(
            bytes(32),
            local_public=b"a" * 32,
            remote_public=b"b" * 32,
            local_ufrag="loca",
            remote_ufrag="remo",
        )
    assert e.value.reason == "no_key"
    with pytest.raises(IceError) as e:
        derive_pair_keys(
            b"k" * 32,
            local_public=b"a" * 32,
            remote_public=b"b" * 32,
            local_ufrag="loca",
            remote_ufrag="re:mo",
        )
    assert e.value.reason == "bad_ufrag"


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
    remote, errors = parse_remote("abcd", sdps)
    assert len(remote.candidates) == MAX_CANDIDATES - 1 and len(errors) == 1
    assert remote == parse_remote("abcd", sdps)[0]  # equal when the map is
    with pytest.raises(IceError):
        parse_remote("ab", sdps)


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


def check(nominate: bool = False, *, controlling: bool = True, keys: PairKeys = REMOTE) -> bytes:
    """A check from REMOTE's side to LOCAL, made with ``keys`` (REMOTE's, when honest)."""
    request = binding_request(
        keys=keys,
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
    assert check_username(message, "loca") == "remo"
    authenticate_request(message, LOCAL)  # raises if not
    controlled = stun.parse_message(check(nominate=True, controlling=False))
    assert "USE-CANDIDATE" not in controlled.attributes  # only the controlling side nominates
    assert controlled.attributes["ICE-CONTROLLED"] == 7


def _reason(raw: bytes, keys: PairKeys = LOCAL) -> str:
    with pytest.raises(IceError) as e:
        authenticate_request(stun.parse_message(raw), keys)
    return e.value.reason


def test_checks_that_do_not_authenticate_are_refused() -> None:
    # OTHER, a peer of LOCAL, sees REMOTE's ufrag in its map and forges a check in its name
    # with the keys it has (its own pair's with LOCAL): the USERNAME is right, the key not
    forged = pair_keys(OTHER_PRIVATE, LOCAL_PRIVATE, "remo", "loca")
    raw = check(keys=forged)
    assert check_username(stun.parse_message(raw), "loca") == "remo"
    assert _reason(raw) == "bad_integrity"
    assert _reason(check(keys=LOCAL)) == "unknown_ufrag"  # our own check reflected back
    other = pair_keys(REMOTE_PRIVATE, LOCAL_PRIVATE, "remo", "othr")
    raw = bytes(binding_request(keys=other, controlling=True, tie_breaker=1, priority=1))
    assert _reason(raw) == "unknown_ufrag"
    unsigned = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    unsigned.attributes["USERNAME"] = "loca:remo"
    unsigned.attributes["PRIORITY"] = 1
    assert _reason(bytes(unsigned)) == "unsigned"
    del unsigned.attributes["USERNAME"]
    assert _reason(bytes(unsigned)) == "no_username"
    allocate = stun.Message(stun.Method.ALLOCATE, stun.Class.REQUEST)
    assert _reason(bytes(allocate)) == "not_binding"


def test_the_answers_are_signed_with_the_pair_s_key_for_our_side() -> None:
    request = stun.parse_message(check())
    raw = success_response(request, ("203.0.113.9", 41000), LOCAL)
    response = stun.parse_message(raw)
    assert response.check_message_integrity(REMOTE.outbound)  # what REMOTE checks it with
    assert response.transaction_id == request.transaction_id
    assert response.attributes["XOR-MAPPED-ADDRESS"] == ("203.0.113.9", 41000)
    assert "MESSAGE-INTEGRITY" in response.attributes
    assert not response.check_message_integrity(REMOTE.inbound)
    error = stun.parse_message(error_response(request, 487, "Role Conflict", LOCAL))
    assert error.message_class == stun.Class.ERROR
    assert error.attributes["ERROR-CODE"] == (487, "Role Conflict")
    assert error.check_message_integrity(REMOTE.outbound)
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
        keys=lambda: LOCAL,
        remote=RemoteIce("remo", tuple(remote)),
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
    """A peer that forges the sources of its own (authenticated) checks gets at most
    MAX_PEER_REFLEXIVE addresses checked (sent to) per round."""
    s = session([HOST])
    request = stun.parse_message(check())
    learned = [s._pair_for((f"198.51.100.{n}", 4000), request) for n in range(20)]
    assert sum(p is not None for p in learned) == MAX_PEER_REFLEXIVE
    assert s._pair_for(("192.168.1.9", 51820), request) is s.pairs[0]  # a known one still is
    assert learned[0] is not None and learned[0].remote.type == "prflx"
    assert learned[0].remote.priority == candidate_priority(1, "prflx")
