"""The server's STUN responder (wgpy/mesh/server/stun.py), pure: parsing, answers, drops,
the rate limit, and hostile input (hypothesis).

Known answers from RFC 5769 ("Test Vectors for STUN"): the sample request of section 2.1
(SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME, MESSAGE-INTEGRITY, FINGERPRINT) and the
XOR-MAPPED-ADDRESS attributes of the sample responses of sections 2.2 (IPv4) and 2.3 (IPv6).
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgpy.mesh.server import stun
from wgpy.mesh.server.stun import (
    MALFORMED,
    NOT_BINDING,
    OVERSIZED,
    RATE_LIMITED,
    BindingRequest,
    Drop,
    StunResponder,
    binding_response,
    fingerprint,
    parse_binding_request,
)

RFC5769_REQUEST = bytes.fromhex(
    "00010058 2112a442 b7e7a701 bc34d686 fa87dfae"
    "80220010 5354554e 20746573 7420636c 69656e74"  # SOFTWARE "STUN test client"
    "00240004 6e0001ff"  # PRIORITY
    "80290008 932ff9b1 51263b36"  # ICE-CONTROLLED
    "00060009 6576746a 3a683676 59202020"  # USERNAME "evtj:h6vY" and padding
    "00080014 9aeaa70c bfd8cb56 781ef2b5 b2d3f249 c1b571a2"  # MESSAGE-INTEGRITY
    "80280004 e57a3bcf"  # FINGERPRINT
)
TXID = bytes.fromhex("b7e7a701 bc34d686 fa87dfae")
RFC5769_XOR_MAPPED_V4 = bytes.fromhex("00200008 0001a147 e112a643")  # 192.0.2.1:32853
RFC5769_XOR_MAPPED_V6 = bytes.fromhex(  # [2001:db8:1234:5678:11:2233:4455:6677]:32853
    "00200014 0002a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9"
)


def request(txid: bytes = TXID, *, with_fingerprint: bool = False, attrs: bytes = b"") -> bytes:
    length = len(attrs) + (8 if with_fingerprint else 0)
    message = struct.pack("!HHI", 0x0001, length, stun.COOKIE) + txid + attrs
    if with_fingerprint:
        message += struct.pack("!HHI", 0x8028, 4, fingerprint(message))
    return message


def test_the_rfc5769_sample_request_parses_with_its_fingerprint() -> None:
    assert len(RFC5769_REQUEST) == 20 + 0x58
    assert parse_binding_request(RFC5769_REQUEST) == BindingRequest(TXID, fingerprint=True)


def test_answers_carry_the_rfc5769_xor_mapped_address_and_nothing_else() -> None:
    v4 = binding_response(BindingRequest(TXID, False), ("192.0.2.1", 32853))
    assert v4 == struct.pack("!HHI", 0x0101, 12, stun.COOKIE) + TXID + RFC5769_XOR_MAPPED_V4
    v6 = binding_response(
        BindingRequest(TXID, False), ("2001:db8:1234:5678:11:2233:4455:6677", 32853)
    )
    assert v6 == struct.pack("!HHI", 0x0101, 24, stun.COOKIE) + TXID + RFC5769_XOR_MAPPED_V6
    # an IPv4-mapped IPv6 source is answered as IPv4
    assert binding_response(BindingRequest(TXID, False), ("::ffff:192.0.2.1", 32853)) == v4


def test_fingerprint_only_when_the_request_had_one() -> None:
    answer = binding_response(BindingRequest(TXID, True), ("192.0.2.1", 32853))
    assert len(answer) == 20 + 12 + 8
    assert answer[-8:-4] == bytes.fromhex("80280004")
    assert struct.unpack("!I", answer[-4:])[0] == fingerprint(answer[:-8])


def test_no_amplification_an_answer_is_at_most_2_2_times_its_request() -> None:
    worst = [
        (request(), ("2001:db8::1", 1)),
        (request(with_fingerprint=True), ("2001:db8::1", 1)),
        (request(), ("192.0.2.1", 1)),
    ]
    for data, source in worst:
        answer = StunResponder().answer(data, source)
        assert answer is not None
        assert len(answer) <= 2.2 * len(data)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", MALFORMED),
        (b"\x00" * 19, MALFORMED),
        (request()[:-1], MALFORMED),
        (request() + b"\x00", MALFORMED),  # length field disagrees
        (request(attrs=b"\x00\x06\x00\x05abcde"), MALFORMED),  # padding missing
        (request(attrs=b"\x00\x06\x00\x08abcd"), MALFORMED),  # attribute past the end
        (request(attrs=b"\x00\x06"), MALFORMED),  # cut attribute header... and length % 4
        (b"\x00\x01\x00\x00\x21\x12\xa4\x43" + TXID, MALFORMED),  # wrong cookie
        (b"\x80\x01\x00\x00\x21\x12\xa4\x42" + TXID, MALFORMED),  # first bits not 0
        (b"\x01\x01\x00\x00\x21\x12\xa4\x42" + TXID, NOT_BINDING),  # a response
        (b"\x00\x11\x00\x00\x21\x12\xa4\x42" + TXID, NOT_BINDING),  # an indication
        (b"\x00\x03\x00\x00\x21\x12\xa4\x42" + TXID, NOT_BINDING),  # Allocate
        (request(attrs=b"\x00\x06\x00\x04abcd" * 200), OVERSIZED),
        (bytes([1, 0, 0, 0]) + bytes(28), MALFORMED),  # a WireGuard initiation's start
    ],
)
def test_what_is_not_a_binding_request_is_dropped_and_counted(data: bytes, reason: str) -> None:
    with pytest.raises(Drop) as e:
        parse_binding_request(data)
    assert e.value.reason == reason
    responder = StunResponder()
    assert responder.answer(data, ("192.0.2.1", 1)) is None
    assert responder.drops == {reason: 1}
    assert responder.answered == 0


def test_a_bad_or_misplaced_fingerprint_is_dropped() -> None:
    good = request(with_fingerprint=True)
    bad = good[:-1] + bytes([good[-1] ^ 1])
    with pytest.raises(Drop):
        parse_binding_request(bad)
    after = request(attrs=good[20:] + b"\x00\x06\x00\x04abcd")  # an attribute after it
    with pytest.raises(Drop):
        parse_binding_request(after)
    # other attributes are walked over and ignored, never echoed
    software = b"\x80\x22\x00\x05hello\x00\x00\x00"
    answer = StunResponder().answer(request(attrs=software), ("192.0.2.1", 9))
    assert answer is not None and b"hello" not in answer and len(answer) == 32


def test_each_source_is_rate_limited_and_others_still_answered() -> None:
    now = [0.0]
    responder = StunResponder(rate=2.0, burst=3.0, clock=lambda: now[0])
    answers = [responder.answer(request(), ("192.0.2.1", p)) for p in range(5)]
    assert [a is not None for a in answers] == [True, True, True, False, False]
    assert responder.drops == {RATE_LIMITED: 2}
    # another address, and the same /64 counted as one source
    assert responder.answer(request(), ("192.0.2.2", 1)) is not None
    v6 = [responder.answer(request(), (f"2001:db8::{i}", 1)) for i in range(1, 5)]
    assert [a is not None for a in v6] == [True, True, True, False]
    now[0] = 0.5  # one token back
    assert responder.answer(request(), ("192.0.2.1", 1)) is not None


def test_drops_are_reported_at_most_once_an_interval() -> None:
    now = [100.0]
    responder = StunResponder(clock=lambda: now[0])
    assert responder.drops_to_report() is None
    responder.answer(b"junk", ("192.0.2.1", 1))
    assert responder.drops_to_report() == {MALFORMED: 1}
    for _ in range(5):
        responder.answer(b"junk", ("192.0.2.1", 1))
    responder.answer(b"\x01\x01\x00\x00\x21\x12\xa4\x42" + TXID, ("192.0.2.1", 1))
    assert responder.drops_to_report() is None  # within the interval
    now[0] += stun.LOG_INTERVAL
    assert responder.drops_to_report() == {MALFORMED: 5, NOT_BINDING: 1}
    now[0] += stun.LOG_INTERVAL
    assert responder.drops_to_report() is None  # nothing new


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=700), st.sampled_from([("192.0.2.1", 5), ("2001:db8::1", 5)]))
def test_random_bytes_are_answered_or_dropped_never_raised(
    data: bytes, source: tuple[str, int]
) -> None:
    responder = StunResponder()
    answer = responder.answer(data, source)
    assert (answer is not None) + sum(responder.drops.values()) == 1


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=40)), max_size=12),
    st.booleans(),
    st.binary(min_size=12, max_size=12),
    st.integers(0, 2),
)
def test_stun_shaped_input_with_any_attributes_never_raises(
    attrs: list[tuple[int, bytes]], with_fp: bool, txid: bytes, damage: int
) -> None:
    body = b"".join(
        struct.pack("!HH", kind, len(value)) + value + bytes(-len(value) % 4)
        for kind, value in attrs
    )
    data = bytearray(request(txid, with_fingerprint=with_fp, attrs=body))
    if damage == 1 and len(data) > 24:
        data[22] ^= 0xFF  # an attribute length
    elif damage == 2:
        data[3] ^= 0x04  # the message length
    responder = StunResponder()
    answer = responder.answer(bytes(data), ("192.0.2.1", 7))
    if answer is not None:
        assert answer[8:20] == txid
        assert len(answer) <= 2.2 * len(data)


# ---------------------------------------------------------------------- RESPONSE-PORT


def response_port(port: int, size: int = 4) -> bytes:
    return struct.pack("!HHH", stun.RESPONSE_PORT, size, port) + bytes(size - 2 + -size % 4)


def test_response_port_is_answered_at_that_port_of_the_source_address_only() -> None:
    responder = StunResponder()
    data = request(attrs=response_port(40001), with_fingerprint=True)
    reply = responder.respond(data, ("192.0.2.1", 32853))
    assert reply is not None
    answer, port = reply
    assert port == 40001  # the address is the source's: respond() returns only a port
    # the mapped address is the request's source, not where the answer goes
    assert RFC5769_XOR_MAPPED_V4 in answer
    assert len(answer) <= 2.2 * len(data)
    assert responder.respond(request(), ("192.0.2.1", 32853)) == (
        binding_response(BindingRequest(TXID, False), ("192.0.2.1", 32853)),
        32853,
    )


@pytest.mark.parametrize(
    "attrs",
    [
        response_port(0),  # no port to answer at
        struct.pack("!HHI", stun.RESPONSE_PORT, 2, 0x9C410000),  # 2 bytes long
        struct.pack("!HH", stun.RESPONSE_PORT, 8) + bytes(8),  # 8 bytes long
        response_port(40001) + response_port(40002),  # twice
    ],
)
def test_a_bad_response_port_is_dropped_and_counted(attrs: bytes) -> None:
    responder = StunResponder()
    assert responder.respond(request(attrs=attrs), ("192.0.2.1", 9)) is None
    assert responder.drops == {stun.BAD_RESPONSE_PORT: 1}


def test_a_response_port_request_is_rate_limited_as_any_other() -> None:
    responder = StunResponder(rate=1, burst=2, clock=lambda: 0.0)
    replies = [
        responder.respond(request(attrs=response_port(p)), ("192.0.2.1", 7)) for p in (1, 2, 3)
    ]
    assert [r is not None for r in replies] == [True, True, False]
    assert responder.drops == {RATE_LIMITED: 1}


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 0xFFFF), st.binary(max_size=6), st.sampled_from([0, 1, 2]))
def test_hostile_response_ports_go_nowhere_but_the_source_address(
    port: int, tail: bytes, where: int
) -> None:
    """Whatever surrounds it, an answer goes to a port of the source's address, and a
    RESPONSE-PORT request is answered at its own port or dropped."""
    value = struct.pack("!H", port) + tail
    attr = struct.pack("!HH", stun.RESPONSE_PORT, len(value)) + value + bytes(-len(value) % 4)
    other = struct.pack("!HH", 0x8022, 4) + b"wgpy"
    attrs = [attr + other, other + attr, attr][where]
    responder = StunResponder()
    reply = responder.respond(request(attrs=attrs), ("2001:db8::1", 5))
    if reply is None:
        assert sum(responder.drops.values()) == 1
    else:
        assert len(value) == 4 and port != 0 and reply[1] == port
