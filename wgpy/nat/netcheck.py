"""What this host's network lets through, as ``tailscale netcheck`` reports it: whether UDP
gets out and back, the public IPv4 and IPv6 addresses STUN servers see, whether the mapping
varies by destination, and each relay's latency over each transport it offers.

STUN goes through a :class:`~wgpy.nat.stunmux.StunMux` on a bind of its own (a running
node's WireGuard port belongs to its daemon). A relay is measured by a STUN Binding request
to its host and port: over UDP through the mux; over TCP and TLS on a connection of its own
(RFC 8489 section 6.2.2: the message as it is, no framing), the time from the request to its
answer. TURN servers (coturn) answer Binding requests without credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

from aioice import stun

from ..device.udp import UdpBind
from ..endpoint import Endpoint
from .discovery import Discovery, discover
from .servers import TurnServer, TurnUrl
from .stunmux import HEADER, StunMux

__all__ = ["NetReport", "RelayCheck", "RelayReport", "netcheck"]

TIMEOUT = 3.0  # seconds for each check
MAX_ANSWER = 1500  # bytes of a STUN answer over TCP


@dataclass(frozen=True)
class RelayCheck:
    """One transport of one relay: its latency, or why there is none."""

    url: TurnUrl
    latency: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class RelayReport:
    name: str
    checks: tuple[RelayCheck, ...]

    @property
    def latency(self) -> float | None:
        """The lowest latency over any transport; None if none answered."""
        found = [c.latency for c in self.checks if c.latency is not None]
        return min(found) if found else None


@dataclass(frozen=True)
class NetReport:
    discovery: Discovery
    ipv6_host: bool  # whether this host can open an IPv6 socket at all
    relays: tuple[RelayReport, ...] = ()

    @property
    def nearest(self) -> RelayReport | None:
        answered = [r for r in self.relays if r.latency is not None]
        return min(answered, key=lambda r: r.latency or 0.0) if answered else None


async def netcheck(
    stun_servers: Sequence[Endpoint],
    relays: Sequence[TurnServer] = (),
    *,
    timeout: float = TIMEOUT,
    ca_cert: str | None = None,
) -> NetReport:
    """Check the network (see the module docstring); never raises for what the network
    does, only OSError when no UDP socket can be opened at all."""
    loop = asyncio.get_running_loop()
    bind = UdpBind(0)
    ipv6_host = bind.v6 is not None

    def readable(reader: object) -> None:
        bind.read_batch(reader)  # type: ignore[arg-type]  # WireGuard's: none are expected

    bind.watch(loop, readable)
    mux = StunMux(bind, loop)
    retries = _retries(timeout)
    try:
        found, reports = await asyncio.gather(
            discover(mux, stun_servers, retries=retries),
            asyncio.gather(*(_relay(mux, relay, timeout, retries, ca_cert) for relay in relays)),
        )
    finally:
        mux.close()
        bind.unwatch(loop)
        bind.close()
    return NetReport(discovery=found, ipv6_host=ipv6_host, relays=tuple(reports))


def _retries(timeout: float, rto: float = 0.1) -> int:
    """Retransmissions that fit in ``timeout`` (each wait doubles)."""
    retries = 0
    while rto * (2 ** (retries + 2) - 1) <= timeout and retries < 8:
        retries += 1
    return retries


async def _relay(
    mux: StunMux, relay: TurnServer, timeout: float, retries: int, ca_cert: str | None
) -> RelayReport:
    checks = await asyncio.gather(
        *(_check(mux, url, timeout, retries, ca_cert) for url in relay.urls)
    )
    return RelayReport(name=relay.name, checks=tuple(checks))


async def _check(
    mux: StunMux, url: TurnUrl, timeout: float, retries: int, ca_cert: str | None
) -> RelayCheck:
    loop = asyncio.get_running_loop()
    kind = socket.SOCK_DGRAM if url.transport == "udp" else socket.SOCK_STREAM
    try:
        async with asyncio.timeout(timeout):
            infos = await loop.getaddrinfo(url.host, url.port, type=kind)
    except (OSError, TimeoutError) as e:
        return RelayCheck(url, error=f"cannot resolve {url.host} ({_why(e)})")
    host, port = str(infos[0][4][0]), int(infos[0][4][1])
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    started = loop.time()
    if url.transport == "udp":
        try:
            await mux.request(request, (host, port), retries=retries)
        except stun.TransactionError as e:
            return RelayCheck(url, error=_stun_why(e))
        return RelayCheck(url, latency=loop.time() - started)
    try:
        async with asyncio.timeout(timeout):
            latency = await _over_stream(url, host, port, request, ca_cert)
    except TimeoutError:
        return RelayCheck(url, error="no answer in time")
    except ssl.SSLCertVerificationError as e:
        return RelayCheck(url, error=f"its TLS certificate is not trusted ({e.verify_message})")
    except ssl.SSLError as e:
        return RelayCheck(url, error=f"TLS failed ({e.reason or e})")
    except (OSError, ValueError) as e:
        return RelayCheck(url, error=_why(e))
    return RelayCheck(url, latency=latency)


async def _over_stream(
    url: TurnUrl, host: str, port: int, request: stun.Message, ca_cert: str | None
) -> float:
    """One Binding request over TCP or TLS; its round trip in seconds."""
    context: ssl.SSLContext | None = None
    if url.secure:
        context = ssl.create_default_context(cafile=ca_cert)
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection(
        host, port, ssl=context, server_hostname=url.host if context else None
    )
    try:
        started = loop.time()
        writer.write(bytes(request))
        await writer.drain()
        header = await reader.readexactly(HEADER)
        length = int.from_bytes(header[2:4], "big")
        if HEADER + length > MAX_ANSWER:
            raise ValueError("the answer is not STUN")
        body = await reader.readexactly(length)
        latency = loop.time() - started
        try:
            answer = stun.parse_message(header + body)
        except Exception:  # aioice raises ValueError, struct.error and others
            raise ValueError("the answer is not STUN") from None
        if answer.transaction_id != request.transaction_id:
            raise ValueError("the answer is not to our request")
        if answer.message_class != stun.Class.RESPONSE:
            raise ValueError("it answered the STUN request with an error")
        return latency
    except asyncio.IncompleteReadError:
        raise ValueError("the connection closed before an answer") from None
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


def _why(e: BaseException) -> str:
    if isinstance(e, socket.gaierror):
        return e.strerror or "no such host"
    if isinstance(e, TimeoutError):
        return "no answer in time"
    if isinstance(e, OSError):
        if e.errno and e.errno > 0:
            return os.strerror(e.errno)  # "Connection refused", not asyncio's wording
        return e.strerror or str(e) or type(e).__name__
    return str(e) or type(e).__name__


def _stun_why(e: stun.TransactionError) -> str:
    return "no answer in time" if isinstance(e, TimeoutError) else str(e)
