"""The cross-platform configuration protocol (UAPI) as wireguard-go speaks it; sans-IO.

``wg`` talks to a userspace implementation over ``/var/run/wireguard/NAME.sock`` with two
operations (https://www.wireguard.com/xplatform/#configuration-protocol)::

    get=1            set=1
    <blank>          key=value ...
                     <blank>

and gets back ``key=value`` lines (for a get), then ``errno=N`` and a blank line, N being 0 or a
negative errno. This module does what wireguard-go's ``device/uapi.go`` does, line for line:

* :func:`get_reply` builds the reply of a get (the fields and their order of
  ``IpcGetOperation``);
* :func:`apply_set` applies the lines of a set and returns the errno (``IpcSetOperation``):
  processing stops at the first error, and what was applied before it stays applied; the
  error inside is :class:`IpcError`, which carries the negative code of the reply (as
  wireguard-go's ``IPCError``);
* :class:`UapiConnection` turns the bytes of one client connection into replies: several
  operations per connection, each set ending with a blank line (or with the end of the stream,
  as wireguard-go's scanner ends it), limits on line and request size.

Everything acts on a :class:`UapiTarget` (the running interface). Keys are lowercase hex in
both directions (uppercase is accepted on input); endpoints are numeric ``ip:port`` with IPv6
in brackets, a link-local scope after ``%``. Nothing here logs a key. This is the server's
side; the command line's client is :mod:`wgpy.uapi.client`.
"""

from __future__ import annotations

import errno
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from ..endpoint import Endpoint, host_text
from ..keys import key_from_hex
from ..log import get_logger
from ..protocol.crypto import ZERO_KEY, clamp
from ..protocol.device import Device
from ..protocol.errors import LocalProtocolError
from ..protocol.peer import Peer

__all__ = [
    "IPC_ERROR_INVALID",
    "IPC_ERROR_IO",
    "IPC_ERROR_PORT_IN_USE",
    "IPC_ERROR_PROTOCOL",
    "IPC_ERROR_UNKNOWN",
    "MAX_LINE_BYTES",
    "MAX_REQUEST_BYTES",
    "IpcError",
    "UapiConnection",
    "UapiTarget",
    "apply_set",
    "errno_reply",
    "get_reply",
]

# The status codes of wireguard-go's ipc package (ipc/uapi_unix.go), negative as on the wire.
IPC_ERROR_IO = -errno.EIO
IPC_ERROR_PROTOCOL = -errno.EPROTO
IPC_ERROR_INVALID = -errno.EINVAL
IPC_ERROR_PORT_IN_USE = -errno.EADDRINUSE
IPC_ERROR_UNKNOWN = -55  # ENOANO: "shouldn't happen"

MAX_LINE_BYTES = 64 * 1024
"""Longest line accepted (bufio.Scanner's limit in wireguard-go); the real ones are < 100."""
MAX_REQUEST_BYTES = 64 * 1024 * 1024
"""Largest set accepted: about a million IPv6 allowed IPs."""

_UINT = re.compile(r"[0-9]+")  # strconv.ParseUint base 10: ASCII digits, no sign, no spaces
# netip.ParsePrefix: a decimal length without leading zeros (the family's maximum is checked
# when the prefix is parsed)
_PREFIX_LENGTHS = frozenset(str(n) for n in range(129))


def _log() -> Any:
    """The logger, looked up when used: one bound at import would miss wgpy.log.configure."""
    return get_logger(component="uapi")


class UapiTarget(Protocol):
    """What the protocol configures: the interface around a :class:`Device`."""

    @property
    def device(self) -> Device: ...

    @property
    def listen_port(self) -> int:
        """The bound UDP port, 0 when not bound."""
        ...

    def set_listen_port(self, port: int) -> None:
        """Rebind (0: any port); raise OSError when that fails (reported as EADDRINUSE)."""
        ...

    @property
    def fwmark(self) -> int:
        """The socket mark, 0 for none."""
        ...

    def set_fwmark(self, mark: int) -> None:
        """Mark the sockets (0: no mark); raise OSError when that fails."""
        ...

    def now(self) -> float:
        """The event loop's monotonic time, as the core's ``now``."""
        ...

    def flush(self) -> None:
        """Send what the core queued and re-arm its timer; called once after every set."""
        ...


class IpcError(Exception):
    """A set failed: ``code`` is the negative errno for the reply (``IPC_ERROR_*``). The
    message has no key."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def errno_reply(code: int) -> str:
    """The status that ends every reply."""
    return f"errno={code}\n\n"


# ------------------------------------------------------------------------------ values


def _name(key: str) -> str:
    """A key name fit for a log: the real ones are short identifiers; anything else might be
    a misplaced key, which must not be logged."""
    return key if len(key) <= 32 and key.isidentifier() else f"({len(key)} characters)"


def _uint(value: str, maximum: int, what: str) -> int:
    # leading zeros are fine (as for ParseUint); more significant digits than the maximum has
    # are out of range without int(), which refuses strings over 4,300 digits
    if _UINT.fullmatch(value) is None or len(value.lstrip("0")) > len(str(maximum)):
        raise IpcError(IPC_ERROR_INVALID, f"failed to parse {what}")
    number = int(value.lstrip("0") or "0")
    if number > maximum:
        raise IpcError(IPC_ERROR_INVALID, f"failed to parse {what}")
    return number


def _true(value: str, what: str) -> None:
    if value != "true":
        raise IpcError(IPC_ERROR_INVALID, f"failed to set {what}: the value is not 'true'")


def _key(value: str, what: str) -> bytes:
    try:
        return key_from_hex(value)
    except ValueError:
        # the message of key_from_hex quotes a character of the value: not for a log
        raise IpcError(IPC_ERROR_INVALID, f"failed to set {what}: not 64 hex digits") from None


def _prefix_text(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    """A prefix as Go's netip.Prefix.String() writes it."""
    text = str(network)
    if text.startswith("::ffff:"):  # maybe IPv4-mapped: Go writes the dotted form
        return f"{host_text(network.network_address)}/{network.prefixlen}"
    return text


_inet_ntop = socket.inet_ntop


def _raw_prefix_text(version: int, address: int, length: int) -> str:
    """``_prefix_text`` from integers: about 1 us instead of 10."""
    if version == 4:
        a = address
        return f"{a >> 24}.{a >> 16 & 255}.{a >> 8 & 255}.{a & 255}/{length}"
    high = address >> 32
    if high == 0xFFFF:
        a = address & 0xFFFFFFFF
        return f"::ffff:{a >> 24}.{a >> 16 & 255}.{a >> 8 & 255}.{a & 255}/{length}"
    if high == 0 and address >> 16:  # inet_ntop writes ::a.b.c.d here; Go does not
        return f"{ipaddress.IPv6Address(address)}/{length}"
    return f"{_inet_ntop(socket.AF_INET6, address.to_bytes(16, 'big'))}/{length}"


def _allowed_ip_texts(device: Device, peer: Peer) -> list[str]:
    allowed_ips = device.allowed_ips
    # Building an ipaddress object per prefix costs about 6 us, a second for 100,000 prefixes.
    # A table that can list its prefixes as integers, ``raw_prefixes(value) -> [(version,
    # network address, prefix length), ...]`` in insertion order, is formatted directly.
    raw: Callable[[Peer], list[tuple[int, int, int]]] | None = getattr(
        allowed_ips, "raw_prefixes", None
    )
    if raw is not None:
        return [_raw_prefix_text(v, a, n) for v, a, n in raw(peer)]
    return [_prefix_text(network) for network in allowed_ips.prefixes(peer)]


# ------------------------------------------------------------------------------ get


def get_reply(target: UapiTarget) -> str:
    """The whole reply to ``get=1``, ``errno=0`` and the blank line included."""
    device = target.device
    lines: list[str] = []
    add = lines.append
    identity = device.identity
    if identity is not None and identity.private != ZERO_KEY:
        add("private_key=" + identity.private.hex())
    port = target.listen_port
    if port:
        add(f"listen_port={port}")
    fwmark = target.fwmark
    if fwmark:
        add(f"fwmark={fwmark}")
    for peer in device.peers.values():
        add("public_key=" + peer.public_key.hex())
        add("preshared_key=" + peer.preshared_key.hex())
        add("protocol_version=1")
        endpoint = Endpoint.from_key(peer.endpoint)
        if endpoint is not None:
            add(f"endpoint={endpoint}")
        seconds, nanoseconds = divmod(peer.last_handshake_ns, 1_000_000_000)
        add(f"last_handshake_time_sec={seconds}")
        add(f"last_handshake_time_nsec={nanoseconds}")
        add(f"tx_bytes={peer.tx_bytes}")
        add(f"rx_bytes={peer.rx_bytes}")
        add(f"persistent_keepalive_interval={peer.persistent_keepalive}")
        texts = _allowed_ip_texts(device, peer)
        if texts:
            add("allowed_ip=" + "\nallowed_ip=".join(texts))
    add("errno=0\n\n")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ set


class _SetOperation:
    """One set, as wireguard-go's IpcSetOperation with its ipcSetPeer."""

    def __init__(self, target: UapiTarget) -> None:
        self.target = target
        self.device = target.device
        self.in_peers = False  # a public_key line was seen: later lines are peer lines
        self.peer: Peer | None = None  # the peer being configured; None for a dummy
        self.public_key = b""
        self.created = False
        self.pka_on = False  # persistent keepalive turned on: send one when the section ends
        self.device_lines: dict[str, Callable[[str], None]] = {
            "private_key": self.private_key,
            "listen_port": self.listen_port,
            "fwmark": self.fwmark,
            "replace_peers": self.replace_peers,
        }
        self.peer_lines: dict[str, Callable[[str], None]] = {
            "update_only": self.update_only,
            "remove": self.remove,
            "preshared_key": self.preshared_key,
            "endpoint": self.endpoint,
            "persistent_keepalive_interval": self.persistent_keepalive_interval,
            "replace_allowed_ips": self.replace_allowed_ips,
            "allowed_ip": self.allowed_ip,
            "protocol_version": self.protocol_version,
        }

    def run(self, lines: Iterable[str]) -> None:
        add_allowed_ip = self.device.add_allowed_ip
        for line in lines:
            if line[-1:] == "\r":  # bufio.ScanLines drops one carriage return
                line = line[:-1]
            if not line:
                break  # a blank line ends the operation
            key, sep, value = line.partition("=")
            if not sep:
                raise IpcError(IPC_ERROR_PROTOCOL, "failed to parse line: no '='")
            if key == "allowed_ip" and self.in_peers:
                # the hot path of large configurations: adding a well-formed prefix
                peer = self.peer
                if peer is not None and value[:1] != "-":
                    address, sep, bits = value.rpartition("/")
                    if sep and bits in _PREFIX_LENGTHS and address and "%" not in address:
                        try:
                            add_allowed_ip(peer, value)
                            continue
                        except ValueError:
                            pass
                self.allowed_ip(value)  # everything else, errors included
            elif key == "public_key":
                self.end_peer()
                self.public_key_line(value)
            elif self.in_peers:
                handler = self.peer_lines.get(key)
                if handler is None:
                    raise IpcError(IPC_ERROR_INVALID, f"invalid UAPI peer key: {_name(key)}")
                handler(value)
            else:
                handler = self.device_lines.get(key)
                if handler is None:
                    raise IpcError(IPC_ERROR_INVALID, f"invalid UAPI device key: {_name(key)}")
                handler(value)
        self.end_peer()

    # -- device lines

    def private_key(self, value: str) -> None:
        key = _key(value, "private_key")
        self.device.set_private_key(None if key == ZERO_KEY else clamp(key))
        _log().debug("uapi: private key updated")

    def listen_port(self, value: str) -> None:
        port = _uint(value, 0xFFFF, "listen_port")
        try:
            self.target.set_listen_port(port)
        except OSError as e:
            raise IpcError(IPC_ERROR_PORT_IN_USE, f"failed to set listen_port {port}: {e}") from e

    def fwmark(self, value: str) -> None:
        mark = _uint(value, 0xFFFFFFFF, "fwmark")
        try:
            self.target.set_fwmark(mark)
        except OSError as e:
            # wireguard-go answers EADDRINUSE here too
            raise IpcError(IPC_ERROR_PORT_IN_USE, f"failed to update fwmark: {e}") from e

    def replace_peers(self, value: str) -> None:
        _true(value, "replace_peers")
        for public_key in list(self.device.peers):
            self.device.remove_peer(public_key)

    # -- peer sections

    def public_key_line(self, value: str) -> None:
        try:
            public_key = key_from_hex(value)
        except ValueError:
            raise IpcError(
                IPC_ERROR_INVALID, "failed to get peer by public key: not 64 hex digits"
            ) from None
        self.in_peers = True
        self.public_key = public_key
        self.created = False
        self.pka_on = False
        device = self.device
        identity = device.identity
        if identity is not None and identity.public == public_key:
            self.peer = None  # our own key: a dummy, as in wireguard-go
            return
        peer = device.peers.get(public_key)
        if peer is None:
            try:
                peer = device.add_peer(public_key)
            except LocalProtocolError as e:
                raise IpcError(IPC_ERROR_INVALID, f"failed to create new peer: {e}") from None
            self.created = True
        self.peer = peer

    def end_peer(self) -> None:
        """handlePostConfig: the keepalive that turning persistent keepalive on sends."""
        peer = self.peer
        if peer is not None and self.pka_on:
            self.device.set_persistent_keepalive(peer, peer.persistent_keepalive, self.target.now())
        elif peer is not None and peer.endpoint is not None:
            self.device.send_staged(peer, self.target.now())
        self.pka_on = False

    def update_only(self, value: str) -> None:
        _true(value, "update_only")
        if self.created and self.peer is not None:
            self.device.remove_peer(self.public_key)
            self.peer = None

    def remove(self, value: str) -> None:
        _true(value, "remove")
        if self.peer is not None:
            self.device.remove_peer(self.public_key)
            self.peer = None

    def preshared_key(self, value: str) -> None:
        key = _key(value, "preshared_key")
        if self.peer is not None:
            self.peer.preshared_key = key

    def endpoint(self, value: str) -> None:
        try:
            endpoint = Endpoint.parse_address(value).as_key()
        except ValueError as e:
            raise IpcError(IPC_ERROR_INVALID, f"failed to set endpoint: {e}") from None
        if self.peer is not None:
            self.device.set_endpoint(self.peer, endpoint)

    def persistent_keepalive_interval(self, value: str) -> None:
        seconds = _uint(value, 0xFFFF, "persistent_keepalive_interval")
        peer = self.peer
        if peer is None:
            return
        old = peer.persistent_keepalive
        if seconds:
            # the interval only: the keepalive goes when the section ends, and only if this
            # turned keepalives on (wireguard-go's pkaOn)
            peer.timers.persistent_keepalive_interval = seconds
        else:
            self.device.set_persistent_keepalive(peer, 0, self.target.now())
        self.pka_on = old == 0 and seconds != 0

    def replace_allowed_ips(self, value: str) -> None:
        _true(value, "replace_allowed_ips")
        if self.peer is not None:
            self.device.set_allowed_ips(self.peer, ())

    def allowed_ip(self, value: str) -> None:
        add = True
        if value[:1] == "-":
            add = False
            value = value[1:]
        address, sep, bits = value.rpartition("/")
        if not sep or not address or "%" in address or bits not in _PREFIX_LENGTHS:
            raise IpcError(
                IPC_ERROR_INVALID, "failed to set allowed ip: not a prefix such as 10.0.0.0/24"
            )
        peer = self.peer
        try:
            if peer is None:
                ipaddress.ip_network(value, strict=False)  # validated, not applied
            elif add:
                self.device.add_allowed_ip(peer, value)
            else:
                self.device.remove_allowed_ip(peer, value)
        except ValueError:
            raise IpcError(
                IPC_ERROR_INVALID, "failed to set allowed ip: not a prefix such as 10.0.0.0/24"
            ) from None

    def protocol_version(self, value: str) -> None:
        if value != "1":
            raise IpcError(IPC_ERROR_INVALID, "invalid protocol version: only 1 exists")


def apply_set(target: UapiTarget, lines: Iterable[str]) -> int:
    """Apply the lines of a set (after ``set=1``; a blank line ends them) and return the errno
    for the reply: 0, or the negative code of the first error, where processing stopped (what
    came before it stays applied). Calls ``target.flush()`` once at the end. Never raises."""
    operation = _SetOperation(target)
    code = 0
    try:
        operation.run(lines)
    except IpcError as e:
        _log().error("uapi: set failed", error=str(e), errno=e.code)
        code = e.code
    except Exception as e:  # a bug somewhere: answer as wireguard-go does, keep serving
        _log().exception("uapi: set failed unexpectedly", error_type=type(e).__name__)
        code = IPC_ERROR_UNKNOWN
    try:
        target.flush()
    except Exception as e:
        _log().exception("uapi: flush after set failed", error_type=type(e).__name__)
    return code


# ------------------------------------------------------------------------------ connection

_OP, _GET, _SET = 0, 1, 2
_END_OF_SET = re.compile(rb"\n\r?\n")  # a newline, then a blank line (an optional CR in it)


class UapiConnection:
    """The protocol on one stream, sans-IO: feed what the client sent, write what comes back.

    As wireguard-go's IpcHandle: operations follow each other on one connection; ``get=1``
    must be followed by a blank line (else ``errno=-22``); an unknown operation closes the
    connection without a reply; the end of the stream ends a set (which is then applied, as
    wireguard-go's scanner does). Unlike wireguard-go, a set is applied once it is complete
    (so a set is atomic for the event loop), and it is read to its end even after an error.
    A line longer than ``max_line`` or a set larger than ``max_request`` is answered with
    ``errno=-5`` (EIO) without being applied, and the connection closes.
    """

    def __init__(
        self,
        target: UapiTarget,
        *,
        max_line: int = MAX_LINE_BYTES,
        max_request: int = MAX_REQUEST_BYTES,
    ) -> None:
        self.target = target
        self.max_line = max_line
        self.max_request = max_request
        self.closed = False
        """No more input will be read: send what the last call returned, then close."""
        self._buffer = bytearray()
        self._state = _OP
        self._search_from = 0
        self._eof = False

    @property
    def in_request(self) -> bool:
        """Part of a request has arrived (so the short timeout applies)."""
        return bool(self._buffer) or self._state != _OP

    def receive_data(self, data: bytes) -> bytes:
        """Consume bytes from the client (``b""`` for the end of the stream) and return the
        replies to send, in order. Performs every operation that is complete."""
        if self.closed:
            return b""
        if data:
            self._buffer += data
        else:
            self._eof = True
        out: list[str] = []
        while not self.closed and self._step(out):
            pass
        if self._eof:
            self.closed = True
        return "".join(out).encode()

    def _step(self, out: list[str]) -> bool:
        """Make one step of progress; False when more input is needed."""
        buffer = self._buffer
        if self._state == _OP:
            newline = buffer.find(b"\n")
            if newline < 0:
                if len(buffer) > self.max_line:
                    _log().error("uapi: operation line too long")
                    self.closed = True
                return False
            op = bytes(buffer[:newline])
            if op == b"get=1":
                del buffer[: newline + 1]
                self._state = _GET
            elif op == b"set=1":
                del buffer[:newline]  # keep the newline: the set ends at "\n\n"
                self._state = _SET
                self._search_from = 0
            else:
                _log().error("uapi: invalid operation", length=len(op))
                self.closed = True
                return False
            return True
        if self._state == _GET:
            if not buffer:
                return False
            follows = buffer[0]
            del buffer[:1]
            self._state = _OP
            if follows == 0x0A:
                out.append(get_reply(self.target))
            else:
                _log().error("uapi: trailing character in get")
                out.append(errno_reply(IPC_ERROR_INVALID))
            return True
        match = _END_OF_SET.search(buffer, self._search_from)
        if match is None:
            last_line = len(buffer) - buffer.rfind(b"\n") - 1
            if len(buffer) > self.max_request or last_line > self.max_line:
                _log().error("uapi: set too large", size=len(buffer))
                out.append(errno_reply(IPC_ERROR_IO))
                self.closed = True
                return False
            if not self._eof:
                self._search_from = max(0, len(buffer) - 2)
                return False
            end = len(buffer)
            body = bytes(buffer[1:])
        else:
            end = match.end()
            body = bytes(buffer[1 : match.start() + 1])
        if end > self.max_request:
            _log().error("uapi: set too large", size=end)
            out.append(errno_reply(IPC_ERROR_IO))
            self.closed = True
            return False
        del buffer[:end]
        self._state = _OP
        lines = body.decode("utf-8", "surrogateescape").split("\n")
        if lines[-1] == "":
            lines.pop()
        out.append(errno_reply(apply_set(self.target, lines)))
        return True
