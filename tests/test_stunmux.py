"""StunMux: STUN and TURN ChannelData on the WireGuard port. Transactions, retransmissions
and hostile input on a MemoryBind (no sockets); then over loopback on a real Interface's
UdpBind while WireGuard traffic flows between two interfaces on the same sockets."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from aioice import stun
from stun_fakes import MemoryStunServer, UdpStunServer
from support import PipeTun, ipv4_packet

from wgpy.device.bind import is_wireguard
from wgpy.device.interface import Interface
from wgpy.device.memorybind import MemoryBind, MemoryNetwork
from wgpy.device.udp import ipv6_available
from wgpy.endpoint import EndpointKey
from wgpy.nat import stunmux
from wgpy.nat.stunmux import (
    CHANNEL_DATA,
    STUN,
    Retransmissions,
    StunBusy,
    StunClosed,
    StunErrorResponse,
    StunMux,
    StunTimeout,
    classify,
)
from wgpy.protocol.crypto import generate_private_key, public_key

T = TypeVar("T")
ME = "192.0.2.1"
SERVER = "198.51.100.1"


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(scenario(), 20))


def binding() -> stun.Message:
    return stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)


def response_to(
    request: stun.Message, cls: stun.Class = stun.Class.RESPONSE, **attributes: Any
) -> stun.Message:
    message = stun.Message(
        message_method=request.message_method,
        message_class=cls,
        transaction_id=request.transaction_id,
    )
    message.attributes.update({k.replace("_", "-"): v for k, v in attributes.items()})
    return message


class Sent:
    """What crosses the memory network, as (data, from, to)."""

    def __init__(self, network: MemoryNetwork) -> None:
        self.datagrams: list[tuple[bytes, tuple[str, int], tuple[str, int]]] = []
        network.filter = self._see

    def _see(self, data: bytes, source: tuple[str, int], to: tuple[str, int]) -> bool:
        self.datagrams.append((data, source, to))
        return True

    def to(self, address: tuple[str, int]) -> list[bytes]:
        return [d for d, _, t in self.datagrams if t == address]


def memory_mux(**kwargs: Any) -> tuple[MemoryNetwork, MemoryBind, StunMux]:
    network = MemoryNetwork()
    bind = MemoryBind(network, ME)
    loop = asyncio.get_running_loop()
    bind.watch(loop, lambda reader: bind.read_batch(reader))  # WireGuard's reads, left unused
    return network, bind, StunMux(bind, loop, **kwargs)


# ---------------------------------------------------------------------- without I/O


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (bytes(binding()), STUN),
        (bytes.fromhex("0101 0000 2112a442") + bytes(12), STUN),
        (bytes.fromhex("4000 0004 deadbeef"), CHANNEL_DATA),
        (bytes.fromhex("7fff 0000"), CHANNEL_DATA),
        (bytes.fromhex("4000 0004 deadbeef 0000"), CHANNEL_DATA),  # padded, as UDP may
        (bytes.fromhex("4000 0008 deadbeef"), stunmux.DROP_BAD_LENGTH),  # cut short
        (bytes.fromhex("4000 00"), stunmux.DROP_TRUNCATED),
        (b"", stunmux.DROP_TRUNCATED),
        (bytes.fromhex("0001 0000 2112a442") + bytes(11), stunmux.DROP_TRUNCATED),
        (bytes.fromhex("0001 0004 2112a442") + bytes(12), stunmux.DROP_BAD_LENGTH),
        (bytes.fromhex("0001 0002 2112a442") + bytes(14), stunmux.DROP_BAD_LENGTH),  # not x4
        (bytes.fromhex("0001 0000 2112a443") + bytes(12), stunmux.DROP_NOT_STUN),  # cookie
        (bytes.fromhex("8001 0000 2112a442") + bytes(12), stunmux.DROP_NOT_STUN),  # top bits
        (bytes.fromhex("c001 0000 2112a442") + bytes(12), stunmux.DROP_NOT_STUN),
        (bytes.fromhex("0001 05e0 2112a442") + bytes(12 + 0x5E0), stunmux.DROP_TOO_LARGE),
        (b"\x05\0\0\0" + bytes(28), stunmux.DROP_NOT_STUN),
    ],
)
def test_classify(data: bytes, kind: str) -> None:
    assert classify(data) == kind


def test_retransmissions_double_and_give_up() -> None:
    r = Retransmissions(100.0, rto=0.5, retries=3)
    sent_at = [100.0]
    while (due := r.next_at) and r.on_timer(due):
        sent_at.append(due)
    assert sent_at == pytest.approx([100.0, 100.5, 101.5, 103.5])  # three retransmissions
    assert r.sent == 4
    assert r.next_at == pytest.approx(107.5)  # when it timed out
    assert not r.on_timer(108.0)  # and stays timed out
    with pytest.raises(ValueError, match="positive"):
        Retransmissions(0.0, rto=0.0)


def test_retransmissions_schedule() -> None:
    r = Retransmissions(0.0, rto=0.1, retries=2)
    at = [0.0]
    while True:
        due = r.next_at
        if not r.on_timer(due):
            break
        at.append(due)
    assert at == pytest.approx([0.0, 0.1, 0.3])
    assert r.next_at == pytest.approx(0.7)  # the deadline of the last try


# ---------------------------------------------------------------------- transactions


def test_request_through_the_bind_gets_the_mapped_address() -> None:
    async def scenario() -> None:
        network, bind, mux = memory_mux()
        server = MemoryStunServer(network, SERVER)
        sent = Sent(network)
        response = await mux.request(binding(), server.key)
        assert response.attributes["XOR-MAPPED-ADDRESS"] == (ME, bind.port)
        assert len(sent.to(server.key)) == 1  # from the bind's own address and port
        assert sent.datagrams[0][1] == (ME, bind.port)
        assert mux.received["response"] == 1 and not mux.drops
        assert mux.pending == 0

    run(scenario)


def test_a_lost_request_is_sent_again_on_schedule() -> None:
    async def scenario() -> None:
        network, _bind, mux = memory_mux()
        server = MemoryStunServer(network, SERVER)
        server.silent = 2
        sent = Sent(network)
        loop = asyncio.get_running_loop()
        started = loop.time()
        request = binding()
        response = await mux.request(request, server.key, rto=0.05, retries=4)
        took = loop.time() - started
        assert response.transaction_id == request.transaction_id
        assert server.requests == 3
        assert sent.to(server.key) == [bytes(request)] * 3  # the same bytes each time
        assert 0.15 <= took < 0.6  # sent at 0, 0.05 and 0.15

    run(scenario)


def test_a_second_answer_to_a_retransmitted_request_is_late_not_unmatched() -> None:
    """A request sent twice may be answered twice (the first answer was only slow): the
    second answer is counted as late, not as a response to nothing."""

    async def scenario() -> None:
        network, _bind, mux = memory_mux()
        server = MemoryStunServer(network, SERVER)
        server.silent = 1  # the first send is lost: the request goes twice
        request = binding()
        answer = bytes(await mux.request(request, server.key, rto=0.02, retries=3))
        mux.datagram_received(answer, server.key)  # the answer to the other send
        assert mux.received[stunmux.LATE_RESPONSE] == 1 and not mux.drops
        once = binding()  # answered at the first send: a repeat of its answer is unmatched
        repeated = bytes(await mux.request(once, server.key))
        mux.datagram_received(repeated, server.key)
        assert mux.drops == {stunmux.DROP_UNMATCHED: 1}

    run(scenario)


def test_a_second_answer_before_the_requester_resumes_is_late_too() -> None:
    """On a busy loop both answers to a request sent twice can arrive before the coroutine
    that asked resumes (the transaction is answered but still pending): the second is late,
    not unmatched (a clean-clone run once counted it as a drop)."""

    async def scenario() -> None:
        network, bind, mux = memory_mux()
        MemoryBind(network, SERVER, 3478)  # there, silent: the request goes again
        request = binding()
        task = asyncio.create_task(mux.request(request, (SERVER, 3478), rto=0.02, retries=5))
        await asyncio.sleep(0.05)
        assert not task.done()
        me = (ME, bind.port)
        answer = bytes(response_to(request, XOR_MAPPED_ADDRESS=me))
        mux.datagram_received(answer, (SERVER, 3478))  # both in one step of the loop
        mux.datagram_received(answer, (SERVER, 3478))
        assert mux.received[stunmux.LATE_RESPONSE] == 1 and not mux.drops
        await task

    run(scenario)


def test_no_answer_times_out_after_every_retransmission() -> None:
    async def scenario() -> None:
        network, _bind, mux = memory_mux()
        sent = Sent(network)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(StunTimeout) as caught:
            await mux.request(binding(), ("203.0.113.9", 3478), rto=0.02, retries=3)
        took = loop.time() - started
        assert len(sent.to(("203.0.113.9", 3478))) == 4
        assert 0.3 <= took < 1.0  # 0.02 * (1 + 2 + 4 + 8)
        assert isinstance(caught.value, TimeoutError)
        assert isinstance(caught.value, stun.TransactionTimeout)
        assert str(caught.value).startswith(
            "no answer from 203.0.113.9:3478 to a STUN request after 4 tries in 0."
        )
        assert mux.pending == 0

    run(scenario)


def test_an_error_response_raises_with_its_code() -> None:
    async def scenario() -> None:
        network, bind, mux = memory_mux()
        peer = MemoryBind(network, SERVER, 3478)
        request = binding()
        task = asyncio.create_task(mux.request(request, (SERVER, 3478)))
        await asyncio.sleep(0.01)
        error = response_to(request, stun.Class.ERROR, ERROR_CODE=(487, "Role Conflict"))
        peer.send_batch([(bytes(error), (ME, bind.port))])
        with pytest.raises(StunErrorResponse) as caught:
            await task
        assert (caught.value.code, caught.value.reason) == (487, "Role Conflict")
        assert isinstance(caught.value, stun.TransactionFailed)
        assert (
            str(caught.value)
            == "198.51.100.1:3478 answered the STUN request with 487 Role Conflict"
        )

    run(scenario)


def test_integrity_is_required_where_the_request_has_a_key() -> None:
    async def scenario() -> None:
        network, bind, mux = memory_mux()
        peer = MemoryBind(network, SERVER, 3478)
        key = b"remote-password-0123456789"
        request = binding()
        request.attributes["USERNAME"] = "abcd:efgh"
        request.add_message_integrity(key)
        task = asyncio.create_task(
            mux.request(request, (SERVER, 3478), rto=0.05, retries=20, integrity_key=key)
        )
        await asyncio.sleep(0.01)
        me = (ME, bind.port)
        bare = response_to(request, XOR_MAPPED_ADDRESS=me)
        peer.send_batch([(bytes(bare), me)])
        forged = response_to(request, XOR_MAPPED_ADDRESS=me)
        forged.add_message_integrity(b"not-the-key")
        peer.send_batch([(bytes(forged), me)])
        await asyncio.sleep(0.01)
        assert not task.done()
        assert mux.drops == {"no-integrity": 1, "bad-integrity": 1}
        good = response_to(request, XOR_MAPPED_ADDRESS=me)
        good.add_message_integrity(key)
        peer.send_batch([(bytes(good), me)])
        assert (await task).attributes["XOR-MAPPED-ADDRESS"] == me

    run(scenario)


def test_a_response_from_elsewhere_or_of_another_method_is_dropped() -> None:
    async def scenario() -> None:
        network, bind, mux = memory_mux()
        server = MemoryBind(network, SERVER, 3478)
        spoofer = MemoryBind(network, "203.0.113.66", 3478)
        request = binding()
        task = asyncio.create_task(mux.request(request, (SERVER, 3478), retries=20))
        await asyncio.sleep(0.01)
        me = (ME, bind.port)
        spoofer.send_batch([(bytes(response_to(request, XOR_MAPPED_ADDRESS=me)), me)])
        other = stun.Message(
            message_method=stun.Method.ALLOCATE,
            message_class=stun.Class.RESPONSE,
            transaction_id=request.transaction_id,
        )
        server.send_batch([(bytes(other), me)])
        await asyncio.sleep(0.01)
        assert not task.done()
        assert mux.drops == {"wrong-source": 1, "wrong-method": 1}
        server.send_batch([(bytes(response_to(request, XOR_MAPPED_ADDRESS=me)), me)])
        await task
        # a second answer to a finished transaction matches nothing
        server.send_batch([(bytes(response_to(request, XOR_MAPPED_ADDRESS=me)), me)])
        await asyncio.sleep(0.01)
        assert mux.drops["unmatched-response"] == 1

    run(scenario)


def test_pending_transactions_are_bounded() -> None:
    async def scenario() -> None:
        _network, _bind, mux = memory_mux(max_pending=4)
        tasks = [
            asyncio.create_task(mux.request(binding(), ("203.0.113.9", 3478), rto=0.02, retries=1))
            for _ in range(4)
        ]
        await asyncio.sleep(0)
        assert mux.pending == 4
        with pytest.raises(
            StunBusy, match=r"too many STUN transactions are in flight \(at most 4\)"
        ):
            await mux.request(binding(), ("203.0.113.9", 3478))
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, StunTimeout) for r in results)
        assert mux.pending == 0
        request = binding()
        first = asyncio.create_task(mux.request(request, ("203.0.113.9", 3478), retries=0))
        await asyncio.sleep(0)
        with pytest.raises(ValueError, match="in flight already"):
            await mux.request(request, ("203.0.113.9", 3478))
        first.cancel()  # a cancelled request leaves nothing behind
        await asyncio.gather(first, return_exceptions=True)
        assert mux.pending == 0

    run(scenario)


def test_close_ends_requests_and_gives_the_port_back() -> None:
    async def scenario() -> None:
        _network, bind, mux = memory_mux()
        task = asyncio.create_task(mux.request(binding(), ("203.0.113.9", 3478)))
        await asyncio.sleep(0)
        assert bind.demux == mux.datagram_received
        with pytest.raises(ValueError, match="one StunMux per bind"):
            StunMux(bind, asyncio.get_running_loop())
        mux.close()
        with pytest.raises(StunClosed):
            await task
        assert bind.demux is None
        with pytest.raises(StunClosed):
            await mux.request(binding(), ("203.0.113.9", 3478))

    run(scenario)


# ---------------------------------------------------------------------- what arrives


def test_requests_indications_and_channel_data_go_to_their_handlers() -> None:
    async def scenario() -> None:
        network, bind, mux = memory_mux()
        peer = MemoryBind(network, SERVER, 3478)
        me = (ME, bind.port)
        request = binding()
        indication = stun.Message(
            message_method=stun.Method.BINDING, message_class=stun.Class.INDICATION
        )
        channel = bytes.fromhex("4001 0004 cafef00d")
        send = [(bytes(request), me), (bytes(indication), me), (channel, me)]
        peer.send_batch(send)  # no handlers: counted drops
        await asyncio.sleep(0.01)
        assert mux.drops == {
            "no-request-handler": 1,
            "no-indication-handler": 1,
            "no-channel-handler": 1,
        }
        seen: list[tuple[str, Any, EndpointKey]] = []
        mux.on_request = lambda m, e, raw: seen.append(("request", m.transaction_id, e))
        mux.on_indication = lambda m, e, raw: seen.append(("indication", m.transaction_id, e))
        mux.on_channel_data = lambda data, e: seen.append(("channel", data, e))
        peer.send_batch(send)
        await asyncio.sleep(0.01)
        assert seen == [
            ("request", request.transaction_id, (SERVER, 3478)),
            ("indication", indication.transaction_id, (SERVER, 3478)),
            ("channel", channel, (SERVER, 3478)),
        ]
        assert mux.received == {"request": 1, "indication": 1, "channel-data": 1}

    run(scenario)


def test_a_handler_that_raises_is_counted_not_raised() -> None:
    async def scenario() -> None:
        _network, _bind, mux = memory_mux()

        def broken(*args: Any) -> None:
            raise RuntimeError("a bug")

        mux.on_request = broken
        for _ in range(3):
            mux.datagram_received(bytes(binding()), (SERVER, 3478))
        assert mux.drops == {"handler-error": 3}

    run(scenario)


def test_hostile_input_is_counted_and_never_raises() -> None:
    async def scenario() -> None:
        _network, _bind, mux = memory_mux()
        mux.on_request = lambda m, e, raw: None
        rng = random.Random(11)
        header = bytes(binding())
        count = 0
        cases: list[bytes] = []
        for _ in range(3000):
            n = rng.randrange(0, 120)
            cases.append(rng.randbytes(n))  # random bytes
            body = rng.randbytes(rng.randrange(0, 30) * 4)  # STUN-shaped, random attributes
            cases.append(header[:2] + len(body).to_bytes(2, "big") + header[4:20] + body)
            cut = header[:2] + (len(body) + 4).to_bytes(2, "big") + header[4:20] + body
            cases.append(cut)  # a length that is more than there is
            cases.append(bytes([rng.randrange(0x40, 0x80)]) + rng.randbytes(rng.randrange(0, 8)))
        for data in cases:
            mux.datagram_received(data, (SERVER, 3478))
            count += 1
        used = sum(mux.received.values())
        assert sum(mux.drops.values()) + used == count
        assert "handler-error" not in mux.drops
        assert mux.drops["bad-length"] > 0 and mux.received["request"] > 0
        malformed = mux.drops["malformed"]
        # attributes with lengths that overrun, an unknown method, a wrong-size address
        for body in (
            bytes.fromhex("0020 0008 0001"),  # XOR-MAPPED-ADDRESS cut short
            bytes.fromhex("0020 00ff 00010000"),
            bytes.fromhex("0024 0002 0000"),  # PRIORITY of two bytes
            bytes.fromhex("0009 0002 0000"),  # ERROR-CODE too short
            bytes.fromhex("0006 0004 ffffffff"),  # USERNAME not UTF-8
        ):
            body += bytes(-len(body) % 4)
            data = header[:2] + len(body).to_bytes(2, "big") + header[4:20] + body
            mux.datagram_received(data, (SERVER, 3478))
        assert "handler-error" not in mux.drops
        assert mux.drops["malformed"] == malformed + 5

    run(scenario)


def test_a_flood_of_unmatched_responses_costs_a_lookup_each() -> None:
    async def scenario() -> None:
        _network, _bind, mux = memory_mux()
        rng = random.Random(5)
        request = binding()
        task = asyncio.create_task(mux.request(request, (SERVER, 3478), retries=30))
        await asyncio.sleep(0)
        floods = [
            bytes(response_to(stun.Message(stun.Method.BINDING, stun.Class.REQUEST)))
            for _ in range(20)
        ] + [bytes.fromhex("0101 0000 2112a442") + rng.randbytes(12) for _ in range(20)]
        started = time.perf_counter()
        for i in range(20000):
            mux.datagram_received(floods[i % len(floods)], (SERVER, 3478))
        took = time.perf_counter() - started
        assert mux.drops == {"unmatched-response": 20000}
        assert mux.pending == 1 and not task.done()
        assert took < 2.0  # about 1 us each here; parsing each would cost tens
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    run(scenario)


# ---------------------------------------------------------------------- a real interface


def test_stun_through_a_real_interface_while_wireguard_flows() -> None:
    """Two Interfaces on loopback (real UdpBinds) shake hands and exchange packets while one
    of them asks a STUN server where it is, through its WireGuard socket, at the same time;
    then hostile datagrams arrive on that socket among WireGuard's: counted, nothing lost."""

    async def scenario() -> None:
        key_a, key_b = generate_private_key(os.urandom), generate_private_key(os.urandom)
        tun_a, tun_b = PipeTun("stuna"), PipeTun("stunb")
        a = Interface("stuna", private_key=key_a, tun=tun_a)  # type: ignore[arg-type]
        b = Interface("stunb", private_key=key_b, tun=tun_b)  # type: ignore[arg-type]
        servers = [await UdpStunServer.start("127.0.0.1")]
        if ipv6_available() and _loopback6():
            servers.append(await UdpStunServer.start("::1"))
        mux = StunMux(a.bind, asyncio.get_running_loop())
        try:
            a.device.add_peer(
                public_key(key_b),
                endpoint=("127.0.0.1", b.listen_port),
                allowed_ips=["10.0.0.2/32"],
            )
            b.device.add_peer(public_key(key_a), allowed_ips=["10.0.0.1/32"])
            pings = [ipv4_packet("10.0.0.1", "10.0.0.2", b"ping %d" % i) for i in range(50)]
            pongs = [ipv4_packet("10.0.0.2", "10.0.0.1", b"pong %d" % i) for i in range(50)]

            async def traffic() -> None:
                for ping, pong in zip(pings, pongs, strict=True):
                    tun_a.push([ping])
                    await until(lambda p=ping: p in tun_b.written)  # type: ignore[misc]
                    tun_b.push([pong])
                    await until(lambda p=pong: p in tun_a.written)  # type: ignore[misc]

            async def stun_requests() -> list[Any]:
                answers = []
                for _ in range(10):
                    for server in servers:
                        answers.append(await mux.request(binding(), server.key))
                return answers

            _, answers = await asyncio.gather(traffic(), stun_requests())
            assert tun_b.written == pings and tun_a.written == pongs
            for answer, server in zip(answers, servers * 10, strict=True):
                host = server.key[0]
                assert answer.attributes["XOR-MAPPED-ADDRESS"] == (host, a.listen_port)
            assert sum(s.requests for s in servers) == 10 * len(servers)
            assert not mux.drops  # no WireGuard message reached the mux
            assert mux.received["response"] == 10 * len(servers)

            # hostile datagrams on the same port while WireGuard flows: counted, nothing lost
            rng = random.Random(3)
            hostile = [
                rng.randbytes(rng.randrange(1, 200)),
                bytes.fromhex("0101 0000 2112a442") + rng.randbytes(12),  # unmatched
                bytes.fromhex("0001 0010 2112a442") + rng.randbytes(12),  # bad length
                bytes.fromhex("4001 0004 deadbeef"),  # ChannelData, no handler
            ] * 50
            hostile = [d for d in hostile if not is_wireguard(d)]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker:
                tun_b.written.clear()
                for i, data in enumerate(hostile):
                    attacker.sendto(data, ("127.0.0.1", a.listen_port))
                    if i % 20 == 0:
                        tun_a.push([pings[i % 50]])
                await until(lambda: sum(mux.drops.values()) >= len(hostile))
                assert sum(mux.drops.values()) == len(hostile), (mux.drops, len(hostile))
                await until(lambda: len(tun_b.written) == (len(hostile) + 19) // 20)
            assert mux.drops["unmatched-response"] == 50 and mux.drops["bad-length"] == 50, (
                mux.drops
            )
            assert mux.drops["no-channel-handler"] == 50
        finally:
            mux.close()
            for server in servers:
                server.close()
            a.close()
            b.close()

    run(scenario)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.001)


def _loopback6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True
