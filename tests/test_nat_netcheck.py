"""wgpy.nat.netcheck's relay checks over TCP against servers on loopback that answer badly:
each is one sentence in the report, never an exception (coturn's good answers are in
tests/interop/test_nat_coturn.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from aioice import stun

from wgpy.nat.netcheck import netcheck
from wgpy.nat.servers import TurnServer, parse_turn_url

Answer = Callable[[bytes], bytes | None]


def _answer_with(kind: str) -> Answer:
    def answer(request: bytes) -> bytes | None:
        tid = request[8:20]
        if kind == "close":
            return None
        if kind == "priority of two bytes":  # struct.error inside aioice
            body = bytes.fromhex("0024 0002 0000 0000")
            return bytes.fromhex("0101") + len(body).to_bytes(2, "big") + request[4:8] + tid + body
        if kind == "too long":
            return bytes.fromhex("0101 ffff") + request[4:8] + tid
        if kind == "another transaction":
            other = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE)
            return bytes(other)
        if kind == "error":
            error = stun.Message(stun.Method.BINDING, stun.Class.ERROR, transaction_id=tid)
            error.attributes["ERROR-CODE"] = (400, "Bad Request")
            return bytes(error)
        ok = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, transaction_id=tid)
        ok.attributes["XOR-MAPPED-ADDRESS"] = ("127.0.0.1", 1)
        return bytes(ok)

    return answer


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("close", "the connection closed before an answer"),
        ("priority of two bytes", "the answer is not STUN"),
        ("too long", "the answer is not STUN"),
        ("another transaction", "the answer is not to our request"),
        ("error", "it answered the STUN request with an error"),
        ("good", None),
    ],
)
def test_bad_answers_over_tcp_are_one_sentence(kind: str, error: str | None) -> None:
    answer = _answer_with(kind)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readexactly(20)
        reply = answer(request)
        if reply is not None:
            writer.write(reply)
            await writer.drain()
        writer.close()

    async def scenario() -> None:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        relay = TurnServer(
            urls=(parse_turn_url(f"turn:127.0.0.1:{port}?transport=tcp"),),
            username="0:test",
            password="unused",
            expires=0,
        )
        async with server:
            report = await netcheck([], [relay], timeout=2)
        (check,) = report.relays[0].checks
        assert check.error == error
        assert (check.latency is None) == (error is not None)

    asyncio.run(asyncio.wait_for(scenario(), 10))
