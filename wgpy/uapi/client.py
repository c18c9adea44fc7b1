"""The client side of the WireGuard control socket (the cross-platform "UAPI"), as ``wg`` uses it.

A userspace WireGuard implementation (wireguard-go, ``wgpy-userspace``) serves
``/var/run/wireguard/NAME.sock``; ``get=1`` reads the interface, ``set=1`` changes it, and
every reply ends with ``errno=N`` and a blank line. This is plain blocking socket code for the
command line; the daemon's side is :mod:`wgpy.uapi.server`, the protocol it speaks
:mod:`wgpy.uapi.protocol`.

Like ``wg``, a socket whose server is gone (the connection is refused) is removed when it is
found.
"""

from __future__ import annotations

import contextlib
import errno as errno_module
import ipaddress
import os
import socket
import stat
from dataclasses import dataclass, field
from pathlib import Path

from wgpy import keys
from wgpy.endpoint import Endpoint
from wgpy.protocol import crypto

from . import paths
from .paths import socket_path

__all__ = [
    "DeviceState",
    "PeerState",
    "UapiError",
    "has_interface",
    "list_interfaces",
    "parse_get_reply",
    "socket_path",
    "uapi_get",
    "uapi_set",
]

TIMEOUT = 10.0  # seconds for a whole request; a healthy daemon answers in milliseconds
_MAX_REPLY = 64 * 1024 * 1024

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class UapiError(Exception):
    """The control socket could not be reached, broke the protocol, or refused a request.
    ``errno`` is a positive error number (``errno.EADDRINUSE`` when a set asked for a listen
    port that is taken) or None: the wire's negative ``errno=-98`` comes back as 98. (The
    server's side raises :class:`wgpy.uapi.protocol.IpcError`, which carries the wire's code.)"""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errno = errno


@dataclass
class PeerState:
    public_key: bytes
    preshared_key: bytes | None = None  # None when the device has none (all zero)
    endpoint: str | None = None  # "192.0.2.1:51820" or "[2001:db8::1]:51820", as wg prints it
    allowed_ips: list[IPNetwork] = field(default_factory=list)
    last_handshake_time_sec: int = 0
    last_handshake_time_nsec: int = 0
    rx_bytes: int = 0
    tx_bytes: int = 0
    persistent_keepalive_interval: int = 0
    protocol_version: int = 0


@dataclass
class DeviceState:
    """What ``get=1`` returns, as ``wg`` holds it; the public key is derived from the private."""

    name: str
    private_key: bytes | None = None
    public_key: bytes | None = None
    listen_port: int = 0
    fwmark: int = 0
    peers: list[PeerState] = field(default_factory=list)


def _connect(name: str, run_dir: Path | None, timeout: float) -> socket.socket:
    if "/" in name or not name:
        raise UapiError(f"`{name}' is not an interface name", errno_module.EINVAL)
    path = socket_path(name, run_dir)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise UapiError(
            f"there is no WireGuard interface named `{name}' (no control socket {path})",
            errno_module.ENODEV,
        ) from None
    except OSError as e:
        raise UapiError(f"cannot reach the control socket {path}: {e.strerror}", e.errno) from None
    if not stat.S_ISSOCK(mode):
        raise UapiError(f"{path} is not a socket", errno_module.EBADF)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except ConnectionRefusedError:
        sock.close()
        _remove_stale(path)
        raise UapiError(
            f"the WireGuard interface `{name}' is gone (nothing serves its control socket)",
            errno_module.ENODEV,
        ) from None
    except OSError as e:
        sock.close()
        raise UapiError(f"cannot reach the control socket {path}: {e.strerror}", e.errno) from None
    return sock


def _remove_stale(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def has_interface(name: str, run_dir: Path | None = None, remove_stale: bool = True) -> bool:
    """Whether a daemon serves ``name``'s control socket (a stale socket is removed, unless
    ``remove_stale`` is false)."""
    if "/" in name or not name:
        return False
    path = socket_path(name, run_dir)
    try:
        if not stat.S_ISSOCK(path.stat().st_mode):
            return False
    except OSError:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        try:
            sock.connect(str(path))
        except ConnectionRefusedError:
            if remove_stale:
                _remove_stale(path)
            return False
        except OSError:
            return True  # as wg: something is there, even if we cannot talk to it now
    return True


def list_interfaces(run_dir: Path | None = None) -> list[str]:
    """The userspace interfaces, in directory order as ``wg show interfaces`` lists them."""
    try:
        entries = os.listdir(run_dir or paths.SOCKET_DIR)
    except FileNotFoundError:
        return []
    names = []
    for entry in entries:
        name = paths.interface_of(entry)
        if name is not None and has_interface(name, run_dir):
            names.append(name)
    return names


def _request(name: str, request: bytes, run_dir: Path | None, timeout: float) -> str:
    """Send ``request`` and return the reply up to and including its blank line."""
    with _connect(name, run_dir, timeout) as sock:
        try:
            sock.sendall(request)
            data = bytearray()
            while not (data.endswith(b"\n\n") or data == b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
                if len(data) > _MAX_REPLY:
                    raise UapiError(f"the reply from `{name}' is too long", errno_module.EPROTO)
        except TimeoutError:
            raise UapiError(
                f"the WireGuard interface `{name}' did not answer within {timeout:g} seconds",
                errno_module.ETIMEDOUT,
            ) from None
        except OSError as e:
            raise UapiError(
                f"cannot talk to the WireGuard interface `{name}': {e.strerror or e}", e.errno
            ) from None
    if not data.endswith(b"\n"):
        raise UapiError(
            f"the WireGuard interface `{name}' closed the connection before it answered",
            errno_module.EPROTO,
        )
    return data.decode("utf-8", errors="replace")


def _errno_of(value: str, name: str) -> int:
    text = value[1:] if value.startswith("-") else value
    if not text.isascii() or not text.isdigit():
        raise UapiError(f"`{name}' sent a malformed errno: {value!r}", errno_module.EPROTO)
    return int(text)  # wireguard-go sends it negated, the documentation shows it positive


def _raise_for_errno(number: int, name: str, what: str) -> None:
    if number:
        reason = os.strerror(number)
        raise UapiError(f"the WireGuard interface `{name}' refused to {what}: {reason}", number)


def uapi_set(name: str, text: str, run_dir: Path | None = None, timeout: float = TIMEOUT) -> None:
    """Send a ``set=1`` request (``text`` ends with a blank line; it is added if missing);
    UapiError if the socket cannot be used or the device answers a nonzero errno."""
    if not text.startswith("set=1\n"):
        raise ValueError("a set request starts with set=1")
    if not text.endswith("\n\n"):
        text = text.rstrip("\n") + "\n\n"
    reply = _request(name, text.encode(), run_dir, timeout)
    number = None
    for line in reply.split("\n"):
        key, equals, value = line.partition("=")
        if equals and key == "errno":
            number = _errno_of(value, name)
    if number is None:
        raise UapiError(f"`{name}' answered without an errno", errno_module.EPROTO)
    _raise_for_errno(number, name, "change its configuration")


def uapi_get(name: str, run_dir: Path | None = None, timeout: float = TIMEOUT) -> DeviceState:
    """The interface's configuration and statistics; UapiError if it cannot be read."""
    return parse_get_reply(name, _request(name, b"get=1\n\n", run_dir, timeout))


def _number(value: str, maximum: int, key: str, name: str) -> int:
    if not value.isascii() or not value.isdigit() or int(value) > maximum:
        raise UapiError(f"`{name}' sent a malformed {key}: {value!r}", errno_module.EPROTO)
    return int(value)


def _key(value: str, key: str, name: str) -> bytes:
    try:
        return keys.key_from_hex(value)
    except ValueError as e:
        raise UapiError(f"`{name}' sent a malformed {key}: {e}", errno_module.EPROTO) from None


def _endpoint(value: str, name: str) -> str:
    """The endpoint as ``wg`` prints it: parsed (numerically) and written back."""
    try:
        return str(Endpoint.parse_address(value))
    except ValueError:
        raise UapiError(
            f"`{name}' sent a malformed endpoint: {value!r}", errno_module.EPROTO
        ) from None


def _allowed_ip(value: str, name: str) -> IPNetwork:
    address, slash, prefix = value.partition("/")
    try:
        ip = ipaddress.ip_address(address)
        if not slash or not prefix.isascii() or not prefix.isdigit():
            raise ValueError
        return ipaddress.ip_network((ip, int(prefix)), strict=False)
    except ValueError:
        raise UapiError(
            f"`{name}' sent a malformed allowed_ip: {value!r}", errno_module.EPROTO
        ) from None


def parse_get_reply(name: str, reply: str) -> DeviceState:
    """The device in a ``get=1`` reply (``key=value`` lines, ``errno=N``, a blank line)."""
    device = DeviceState(name)
    peer: PeerState | None = None
    number: int | None = None
    lines = reply.split("\n")
    if len(lines) < 2 or lines[-2:] != ["", ""]:
        raise UapiError(
            f"`{name}' sent a reply that does not end with a blank line", errno_module.EPROTO
        )
    for line in lines[:-2]:
        key, equals, value = line.partition("=")
        if not equals:
            raise UapiError(f"`{name}' sent a malformed line: {line!r}", errno_module.EPROTO)
        if key == "errno":
            number = _errno_of(value, name)
        elif peer is None and key == "private_key":
            device.private_key = _key(value, key, name)
            device.public_key = crypto.public_key(device.private_key)
        elif peer is None and key == "listen_port":
            device.listen_port = _number(value, 0xFFFF, key, name)
        elif peer is None and key == "fwmark":
            device.fwmark = _number(value, 0xFFFFFFFF, key, name)
        elif key == "public_key":
            peer = PeerState(_key(value, key, name))
            device.peers.append(peer)
        elif peer is None:
            continue  # a device key this client does not know
        elif key == "preshared_key":
            psk = _key(value, key, name)
            peer.preshared_key = psk if any(psk) else None
        elif key == "endpoint":
            peer.endpoint = _endpoint(value, name)
        elif key == "allowed_ip":
            peer.allowed_ips.append(_allowed_ip(value, name))
        elif key == "last_handshake_time_sec":
            peer.last_handshake_time_sec = _number(value, 2**63 - 1, key, name)
        elif key == "last_handshake_time_nsec":
            peer.last_handshake_time_nsec = _number(value, 2**63 - 1, key, name)
        elif key == "rx_bytes":
            peer.rx_bytes = _number(value, 2**64 - 1, key, name)
        elif key == "tx_bytes":
            peer.tx_bytes = _number(value, 2**64 - 1, key, name)
        elif key == "persistent_keepalive_interval":
            peer.persistent_keepalive_interval = _number(value, 0xFFFF, key, name)
        elif key == "protocol_version":
            peer.protocol_version = _number(value, 2**32 - 1, key, name)
    if number is None:
        raise UapiError(f"`{name}' answered without an errno", errno_module.EPROTO)
    _raise_for_errno(number, name, "show its configuration")
    return device
