"""The library face of wgpy: create and configure an interface from Python.

    import asyncio, wgpy

    async def main():
        async with wgpy.open_interface("wg0", private_key=key, listen_port=51820,
                                       addresses=["10.0.0.1/24"]) as wg:
            wg.add_peer(peer_key, endpoint="192.0.2.2:51820", allowed_ips=["10.0.0.2/32"])
            await asyncio.sleep(60)
            print(wg.peers())

The interface also serves the control socket, so ``wg show wg0`` works while it runs.
Keys are 32 raw bytes or the base64 text that ``wg genkey`` prints.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from .config import resolve_endpoint
from .device.interface import Interface
from .endpoint import Endpoint
from .keys import key_from_base64, key_to_base64
from .protocol.constants import DEFAULT_MTU
from .uapi.server import UapiServer, serve_uapi


def _key(value: bytes | str) -> bytes:
    if isinstance(value, bytes):
        if len(value) != 32:
            raise ValueError("a key is 32 bytes")
        return value
    return key_from_base64(value.strip())


def parse_endpoint(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` to the core's endpoint key (host names are resolved, once:
    :class:`OSError` if that fails)."""
    try:
        endpoint: Endpoint | None = Endpoint.parse(text)
    except ValueError:
        endpoint = None
    if endpoint is None or endpoint.port == 0:
        raise ValueError(f"endpoint {text!r} is not host:port or [ipv6]:port")
    if not endpoint.is_numeric:
        endpoint = resolve_endpoint(endpoint, retries=0)
    return endpoint.as_key()


@dataclass(frozen=True)
class PeerStatus:
    public_key: str
    endpoint: str | None
    allowed_ips: tuple[str, ...]
    latest_handshake_ns: int
    rx_bytes: int
    tx_bytes: int
    persistent_keepalive: int


class WireGuardInterface:
    """A running interface; use :func:`open_interface` to get one."""

    def __init__(self, iface: Interface, server: UapiServer) -> None:
        self._iface = iface
        self._server = server
        self.name = iface.name

    @property
    def public_key(self) -> str | None:
        pk = self._iface.device.public_key
        return key_to_base64(pk) if pk else None

    @property
    def listen_port(self) -> int:
        return self._iface.listen_port

    def set_listen_port(self, port: int) -> None:
        self._iface.set_listen_port(port)

    def set_private_key(self, key: bytes | str | None) -> None:
        self._iface.device.set_private_key(None if key is None else _key(key))
        self._iface.flush()

    def add_peer(
        self,
        public_key: bytes | str,
        *,
        endpoint: str | None = None,
        allowed_ips: Iterable[str] = (),
        preshared_key: bytes | str | None = None,
        persistent_keepalive: int = 0,
    ) -> None:
        """Add a peer, or update the one with this key (allowed IPs are added)."""
        device = self._iface.device
        peer = device.add_peer(
            _key(public_key),
            preshared_key=None if preshared_key is None else _key(preshared_key),
            endpoint=parse_endpoint(endpoint) if endpoint else None,
            allowed_ips=allowed_ips,
        )
        if persistent_keepalive != peer.persistent_keepalive:
            device.set_persistent_keepalive(peer, persistent_keepalive, self._iface.now())
        self._iface.flush()

    def remove_peer(self, public_key: bytes | str) -> None:
        self._iface.device.remove_peer(_key(public_key))
        self._iface.flush()

    def peers(self) -> list[PeerStatus]:
        device = self._iface.device
        out = []
        for peer in device.peers.values():
            endpoint = Endpoint.from_key(peer.endpoint)
            out.append(
                PeerStatus(
                    public_key=key_to_base64(peer.public_key),
                    endpoint=None if endpoint is None else str(endpoint),
                    allowed_ips=tuple(str(p) for p in device.allowed_ips.prefixes(peer)),
                    latest_handshake_ns=peer.last_handshake_ns,
                    rx_bytes=peer.rx_bytes,
                    tx_bytes=peer.tx_bytes,
                    persistent_keepalive=peer.persistent_keepalive,
                )
            )
        return out

    async def wait_closed(self) -> None:
        await self._iface.closed.wait()

    def close(self) -> None:
        self._server.close()
        self._iface.close()


async def _ip(*args: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "ip", *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    if proc.returncode:
        raise OSError(f"ip {' '.join(args)} failed: {err.decode().strip()}")


@asynccontextmanager
async def open_interface(
    name: str,
    *,
    private_key: bytes | str | None = None,
    listen_port: int = 0,
    addresses: Sequence[str] = (),
    mtu: int = DEFAULT_MTU,
    up: bool = True,
) -> AsyncIterator[WireGuardInterface]:
    """Create a WireGuard interface (needs root), serve its control socket, and remove both
    on exit. ``addresses`` are assigned with ``ip``; the link is set up unless ``up=False``."""
    iface = Interface(
        name,
        mtu=mtu,
        listen_port=listen_port,
        private_key=None if private_key is None else _key(private_key),
    )
    try:
        server = await serve_uapi(iface.name, iface, on_socket_removed=iface.close)
    except BaseException:
        iface.close()
        raise
    wg = WireGuardInterface(iface, server)
    try:
        for address in addresses:
            family = "-6" if ":" in address else "-4"
            await _ip(family, "address", "add", address, "dev", iface.name)
        if up:
            await _ip("link", "set", "mtu", str(mtu), "up", "dev", iface.name)
        yield wg
    finally:
        wg.close()
