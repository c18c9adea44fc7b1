"""wg-quick configuration files: find them, read them, check them, write them.

A configuration is what ``wg setconf`` reads (``[Interface]`` PrivateKey, ListenPort, FwMark;
``[Peer]`` PublicKey, PresharedKey, AllowedIPs, Endpoint, PersistentKeepalive) plus what
wg-quick handles itself in ``[Interface]`` (Address, DNS, MTU, Table, PreUp, PostUp, PreDown,
PostDown, SaveConfig). Lines are read as those two programs read them:

- everything from ``#`` to the end of the line is a comment;
- section headers and key names are matched without regard to ASCII case;
- for the ``wg`` keys every whitespace character of the line is dropped, so ``Allowed IPs =
  10.0.0.0/8, fd00::/8`` is fine; the wg-quick keys have the whitespace around the key and
  the value trimmed, so hooks keep their inner spaces;
- Address and DNS take comma- or whitespace-separated lists and may be repeated; hooks may
  be repeated and run in order; for the other keys the last one wins.

Nothing is resolved or checked against the system while parsing: endpoints keep their host
names until :func:`resolve_endpoint` (``wgpy up`` calls it, as ``wg setconf`` resolves them
when the interface is configured). Errors are :class:`ConfigError`, whose message names the
file and the line: ``wg0.conf line 3: PrivateKey is not a valid key: expected 44 ...``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from wgpy import keys
from wgpy.endpoint import Endpoint, parse_port

__all__ = [
    "CONFIG_DIR",
    "Config",
    "ConfigError",
    "Endpoint",
    "IPAddress",
    "IPInterface",
    "IPNetwork",
    "Interface",
    "Peer",
    "format_address",
    "format_network",
    "interface_name",
    "is_world_accessible",
    "load",
    "parse",
    "resolve_config_path",
    "resolve_endpoint",
    "valid_interface_name",
]

CONFIG_DIR = Path("/etc/wireguard")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

# C's isspace() in the "C" locale: what wg drops from lines and wg-quick trims.
_WHITESPACE = " \t\n\v\f\r"
_WHITESPACE_TABLE = str.maketrans("", "", _WHITESPACE)
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_LIST_SEPARATORS = re.compile(r"[, \t\n\v\f\r]+")
_INTERFACE_NAME = re.compile(r"[a-zA-Z0-9_=+.-]{1,15}")
_CONFIG_FILE_NAME = re.compile(r"(?:^|/)([a-zA-Z0-9_=+.-]{1,15})\.conf$")
_DECIMAL = re.compile(r"[0-9]+")
_HEX = re.compile(r"[0-9a-fA-F]+")
_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_DNS_ADDRESS = re.compile(r"[0-9.]+|.*:.*")  # how wg-quick tells a server from a search domain

_MAX_U32 = 0xFFFFFFFF
_MIN_MTU, _MAX_MTU = 68, 65535


def _lower(text: str) -> str:
    """ASCII-only lowercase, as strcasecmp compares (str.lower maps e.g. KELVIN SIGN to k)."""
    return text.translate(_ASCII_LOWER)


def _trim(text: str) -> str:
    return text.strip(_WHITESPACE)


class ConfigError(ValueError):
    """A configuration the user must fix; ``str()`` is one sentence naming the file and line."""

    def __init__(self, reason: str, source: str | None = None, line: int | None = None) -> None:
        if source is not None and line is not None:
            message = f"{source} line {line}: {reason}"
        elif source is not None:
            message = f"{source}: {reason}"
        else:
            message = reason
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.source = source
        self.line = line


# ----------------------------------------------------------------------------------------
# Values


def format_address(address: IPAddress) -> str:
    """An address as the C library prints it (``inet_ntop``), which for some IPv6 addresses
    (IPv4-mapped and -compatible ones) differs from Python's ``str()``."""
    if isinstance(address, ipaddress.IPv6Address):
        text = socket.inet_ntop(socket.AF_INET6, address.packed)
        return f"{text}%{address.scope_id}" if address.scope_id else text
    return str(address)


def format_network(network: IPNetwork | IPInterface) -> str:
    """``address/prefixlen`` with the address as ``inet_ntop`` prints it."""
    if isinstance(network, ipaddress.IPv4Interface | ipaddress.IPv6Interface):
        return f"{format_address(network.ip)}/{network.network.prefixlen}"
    return f"{format_address(network.network_address)}/{network.prefixlen}"


def resolve_endpoint(
    endpoint: Endpoint,
    retries: int = 15,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[str], None] | None = None,
) -> Endpoint:
    """``endpoint`` with its host resolved to an address, as ``wg setconf`` resolves it: the
    first address ``getaddrinfo`` returns; transient failures are retried ``retries`` times
    (negative: forever) with a growing delay, permanent ones raise at once. Raises
    :class:`OSError` (a :class:`socket.gaierror`) with the resolver's message."""
    permanent = {socket.EAI_NONAME, socket.EAI_FAIL, getattr(socket, "EAI_NODATA", None)}
    delay = 1.0
    while True:
        try:
            infos = socket.getaddrinfo(
                endpoint.host,
                endpoint.port,
                socket.AF_UNSPEC,
                socket.SOCK_DGRAM,
                socket.IPPROTO_UDP,
            )
            break
        except UnicodeError:  # Python's IDNA codec: a label empty or over 63 characters
            raise socket.gaierror(
                socket.EAI_NONAME, "not a valid host name (a label is empty or too long)"
            ) from None
        except socket.gaierror as e:
            if e.errno in permanent or retries == 0:
                raise
            retries -= 1
            if on_retry is not None:
                on_retry(f"{e.strerror}: `{endpoint}'. Trying again in {delay:.2f} seconds...")
            sleep(delay)
            delay = min(20.0, delay * 6 / 5)
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            host, port = socket.getnameinfo(
                sockaddr, socket.NI_NUMERICHOST | socket.NI_NUMERICSERV | socket.NI_DGRAM
            )
            return Endpoint(host, int(port))
    raise OSError(f"neither an IPv4 nor an IPv6 address found for `{endpoint}'")


# ----------------------------------------------------------------------------------------
# The configuration


@dataclass
class Interface:
    """The ``[Interface]`` section. ``None`` means "not in the file": ``wg setconf`` then
    clears the private key and sets the listen port (random) and fwmark to 0."""

    private_key: bytes | None = None
    listen_port: int | None = None
    fwmark: int | None = None  # 0: explicitly off
    addresses: list[IPInterface] = field(default_factory=list)
    mtu: int | None = None  # None: worked out at `up`, as wg-quick does
    dns: list[IPAddress] = field(default_factory=list)
    dns_search: list[str] = field(default_factory=list)
    table: str | None = None  # "auto", "off", a number or a routing table name
    pre_up: list[str] = field(default_factory=list)
    post_up: list[str] = field(default_factory=list)
    pre_down: list[str] = field(default_factory=list)
    post_down: list[str] = field(default_factory=list)
    save_config: bool = False


@dataclass
class Peer:
    """One ``[Peer]`` section."""

    public_key: bytes
    preshared_key: bytes | None = None
    endpoint: Endpoint | None = None
    allowed_ips: list[IPNetwork] = field(default_factory=list)
    persistent_keepalive: int | None = None  # 0: explicitly off


@dataclass
class Config:
    """A whole configuration file. ``warnings`` are what was accepted but looks like a
    mistake (an AllowedIPs entry with host bits set, as ``wg`` warns)."""

    interface: Interface = field(default_factory=Interface)
    peers: list[Peer] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list, compare=False)

    def to_wg_quick(self) -> str:
        """The configuration as a wg-quick file, in the order ``wg-quick save`` writes one:
        the wg-quick keys, then what ``wg showconf`` prints. Comments are not kept."""
        iface = self.interface
        lines = ["[Interface]"]
        lines += [f"Address = {format_network(a)}" for a in iface.addresses]
        lines += [f"DNS = {format_address(a)}" for a in iface.dns]
        lines += [f"DNS = {d}" for d in iface.dns_search]
        if iface.mtu is not None:
            lines.append(f"MTU = {iface.mtu}")
        if iface.table is not None:
            lines.append(f"Table = {iface.table}")
        if iface.save_config:
            lines.append("SaveConfig = true")
        for key, hooks in (
            ("PreUp", iface.pre_up),
            ("PostUp", iface.post_up),
            ("PreDown", iface.pre_down),
            ("PostDown", iface.post_down),
        ):
            lines += [f"{key} = {hook}" for hook in hooks]
        if iface.listen_port is not None:
            lines.append(f"ListenPort = {iface.listen_port}")
        if iface.fwmark is not None:
            lines.append(f"FwMark = {f'0x{iface.fwmark:x}' if iface.fwmark else 'off'}")
        if iface.private_key is not None:
            lines.append(f"PrivateKey = {keys.key_to_base64(iface.private_key)}")
        blocks = ["\n".join(lines)]
        for peer in self.peers:
            lines = ["[Peer]", f"PublicKey = {keys.key_to_base64(peer.public_key)}"]
            if peer.preshared_key is not None:
                lines.append(f"PresharedKey = {keys.key_to_base64(peer.preshared_key)}")
            if peer.allowed_ips:
                lines.append("AllowedIPs = " + ", ".join(map(format_network, peer.allowed_ips)))
            if peer.endpoint is not None:
                lines.append(f"Endpoint = {peer.endpoint}")
            if peer.persistent_keepalive is not None:
                keepalive = peer.persistent_keepalive or "off"
                lines.append(f"PersistentKeepalive = {keepalive}")
            blocks.append("\n".join(lines))
        return "\n\n".join(blocks) + "\n"

    def to_uapi_set(self) -> str:
        """The control-socket request that ``wg setconf`` sends for this file: it replaces
        the private key, listen port, fwmark and every peer. Endpoints must be numeric
        (see :meth:`with_resolved_endpoints`); ValueError otherwise."""
        iface = self.interface
        private = iface.private_key if iface.private_key is not None else bytes(keys.KEY_LEN)
        lines = [
            "set=1",
            f"private_key={keys.key_to_hex(private)}",
            f"listen_port={iface.listen_port or 0}",
            f"fwmark={iface.fwmark or 0}",
            "replace_peers=true",
        ]
        for peer in self.peers:
            lines.append(f"public_key={keys.key_to_hex(peer.public_key)}")
            if peer.preshared_key is not None:
                lines.append(f"preshared_key={keys.key_to_hex(peer.preshared_key)}")
            if peer.endpoint is not None:
                if not peer.endpoint.is_numeric:
                    raise ValueError(f"the endpoint {peer.endpoint} has not been resolved")
                lines.append(f"endpoint={peer.endpoint}")
            if peer.persistent_keepalive is not None:
                lines.append(f"persistent_keepalive_interval={peer.persistent_keepalive}")
            lines.append("replace_allowed_ips=true")
            lines += [f"allowed_ip={format_network(n)}" for n in peer.allowed_ips]
        return "\n".join(lines) + "\n\n"

    def with_resolved_endpoints(self, resolve: Callable[[Endpoint], Endpoint]) -> Config:
        """A copy whose peers' endpoints went through ``resolve`` (numeric ones do not)."""
        peers = [
            replace(p, endpoint=resolve(p.endpoint))
            if p.endpoint is not None and not p.endpoint.is_numeric
            else p
            for p in self.peers
        ]
        return replace(self, peers=peers, warnings=list(self.warnings))


# ----------------------------------------------------------------------------------------
# Parsing


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.config = Config()
        self.section: str | None = None
        self.peer: Peer | None = None
        self.peer_line = 0
        self.line = 0

    def error(self, reason: str) -> ConfigError:
        return ConfigError(reason, self.source, self.line)

    def warn(self, reason: str) -> None:
        self.config.warnings.append(ConfigError(reason, self.source, self.line).message)

    def feed(self, raw: str) -> None:
        self.line += 1
        if "\0" in raw:
            raise self.error("the line contains a NUL character")
        stripped = raw.split("#", 1)[0]
        cleaned = stripped.translate(_WHITESPACE_TABLE)
        if not cleaned:
            return
        if cleaned.startswith("["):
            self.start_section(cleaned)
            return
        key, equals, value = stripped.partition("=")
        key = _trim(key)
        if not equals:
            raise self.error(f"expected `Key = Value' or a [Section], got `{_trim(stripped)}'")
        if not key:
            raise self.error(f"there is no key before the `=' in `{_trim(stripped)}'")
        if self.section is None:
            raise self.error(f"{key} is outside any section; put it under [Interface] or [Peer]")
        if self.section == "interface":
            self.interface_key(key, _trim(value))
        else:
            self.peer_key(key, value.translate(_WHITESPACE_TABLE))

    def start_section(self, header: str) -> None:
        self.finish_peer()
        name = _lower(header)
        if name == "[interface]":
            self.section = "interface"
        elif name == "[peer]":
            self.section = "peer"
            self.peer = Peer(public_key=b"")
            self.peer_line = self.line
        else:
            raise self.error(f"{header} is not a section; expected [Interface] or [Peer]")

    def finish_peer(self) -> None:
        if self.peer is None:
            return
        if not self.peer.public_key:
            raise ConfigError("this [Peer] section has no PublicKey", self.source, self.peer_line)
        self.config.peers.append(self.peer)
        self.peer = None

    def interface_key(self, key: str, value: str) -> None:
        iface = self.config.interface
        name = _lower(key)
        # wg-quick's own keys, with their values trimmed but otherwise as written.
        if name == "address":
            iface.addresses += [self.address(a) for a in _split_list(value)]
        elif name == "dns":
            for item in _split_list(value):
                if _DNS_ADDRESS.fullmatch(item):
                    iface.dns.append(self.dns_server(item))
                else:
                    iface.dns_search.append(item)
        elif name == "mtu":
            iface.mtu = self.mtu(value) if value else None
        elif name == "table":
            iface.table = self.table(value) if value else None
        elif name in _HOOKS:
            if value:
                getattr(iface, _HOOKS[name]).append(value)
        elif name == "saveconfig":
            iface.save_config = self.boolean(key, value)
        # wg's keys, with every whitespace character dropped.
        elif name.translate(_WHITESPACE_TABLE) in ("privatekey", "listenport", "fwmark"):
            value = value.translate(_WHITESPACE_TABLE)
            name = name.translate(_WHITESPACE_TABLE)
            if not value:
                raise self.error(f"{_CANONICAL[name]} has no value")
            if name == "privatekey":
                iface.private_key = self.key("PrivateKey", value)
            elif name == "listenport":
                try:
                    iface.listen_port = parse_port(value)
                except ValueError as e:
                    raise self.error(f"ListenPort is not a valid port: {e}") from None
            else:
                iface.fwmark = self.fwmark(value)
        elif name.translate(_WHITESPACE_TABLE) in _PEER_KEYS:
            raise self.error(f"{key} belongs in a [Peer] section, not in [Interface]")
        else:
            raise self.error(f"{key} is not a key of [Interface]")

    def peer_key(self, key: str, value: str) -> None:
        peer = self.peer
        assert peer is not None
        name = _lower(key.translate(_WHITESPACE_TABLE))
        if name not in _PEER_KEYS:
            if name in _INTERFACE_KEYS:
                raise self.error(f"{key} belongs in the [Interface] section, not in [Peer]")
            raise self.error(f"{key} is not a key of [Peer]")
        if not value:
            raise self.error(f"{_CANONICAL[name]} has no value")
        if name == "publickey":
            peer.public_key = self.key("PublicKey", value)
        elif name == "presharedkey":
            peer.preshared_key = self.key("PresharedKey", value)
        elif name == "allowedips":
            peer.allowed_ips += [self.allowed_ip(item) for item in value.split(",")]
        elif name == "endpoint":
            try:
                peer.endpoint = Endpoint.parse(value)
            except ValueError as e:
                raise self.error(f"Endpoint is not valid: {e}") from None
        else:
            peer.persistent_keepalive = self.keepalive(value)

    # Values ------------------------------------------------------------------------------

    def key(self, name: str, value: str) -> bytes:
        try:
            return keys.key_from_base64(value)
        except ValueError as e:
            raise self.error(f"{name} is not a valid key: {e}") from None

    def address(self, text: str) -> IPInterface:
        try:
            return ipaddress.ip_interface(text)
        except ValueError:
            raise self.error(
                f"Address {text!r} is not an IP address with an optional /prefix length"
            ) from None

    def dns_server(self, text: str) -> IPAddress:
        try:
            return ipaddress.ip_address(text)
        except ValueError:
            raise self.error(f"DNS server {text!r} is not an IP address") from None

    def mtu(self, text: str) -> int:
        if _DECIMAL.fullmatch(text) and _MIN_MTU <= int(text) <= _MAX_MTU:
            return int(text)
        raise self.error(f"MTU is not a number from {_MIN_MTU} to {_MAX_MTU}: {text!r}")

    def table(self, text: str) -> str:
        if _lower(text) in ("auto", "off"):
            return _lower(text)
        if _DECIMAL.fullmatch(text) and int(text) <= _MAX_U32:
            return str(int(text))
        if _TABLE_NAME.fullmatch(text):
            return text
        raise self.error(f"Table is not auto, off, a table number or a table name: {text!r}")

    def boolean(self, key: str, text: str) -> bool:
        if _lower(text) == "true":
            return True
        if _lower(text) == "false":
            return False
        raise self.error(f"{key} is neither true nor false: {text!r}")

    def fwmark(self, text: str) -> int:
        """As ``wg``: off, decimal, or hexadecimal with a lowercase 0x, at most 32 bits."""
        if _lower(text) == "off":
            return 0
        value = None
        if len(text) > 2 and text.startswith("0x"):
            if _HEX.fullmatch(text[2:]):
                value = int(text[2:], 16)
        elif _DECIMAL.fullmatch(text):
            value = int(text)
        if value is None or value > _MAX_U32:
            raise self.error(f"FwMark is neither off nor a number from 0 to 0xffffffff: {text!r}")
        return value

    def keepalive(self, text: str) -> int:
        if _lower(text) == "off":
            return 0
        if _DECIMAL.fullmatch(text) and int(text) <= 0xFFFF:
            return int(text)
        raise self.error(
            f"PersistentKeepalive is neither off nor a number of seconds from 0 to 65535: {text!r}"
        )

    def allowed_ip(self, text: str) -> IPNetwork:
        address, slash, prefix = text.partition("/")
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise self.error(f"AllowedIPs entry {text!r} is not an IP address") from None
        if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
            raise self.error(f"AllowedIPs entry {text!r} has a scope, which it cannot have")
        if slash:
            if not _DECIMAL.fullmatch(prefix) or int(prefix) > ip.max_prefixlen:
                raise self.error(
                    f"AllowedIPs entry {text!r} has a prefix length that is not a number "
                    f"from 0 to {ip.max_prefixlen}"
                )
            length = int(prefix)
        else:
            length = ip.max_prefixlen
        network = ipaddress.ip_network((ip, length), strict=False)
        if network.network_address != ip:
            self.warn(
                f"AllowedIPs entry {text} has a nonzero host part; "
                f"it means {format_network(network)}"
            )
        return network

    def finish(self) -> Config:
        self.finish_peer()
        return self.config


_HOOKS = {"preup": "pre_up", "postup": "post_up", "predown": "pre_down", "postdown": "post_down"}
_PEER_KEYS = {"publickey", "presharedkey", "allowedips", "endpoint", "persistentkeepalive"}
_INTERFACE_KEYS = {"privatekey", "listenport", "fwmark", "address", "dns", "mtu", "table"}
_INTERFACE_KEYS |= set(_HOOKS) | {"saveconfig"}
_CANONICAL = {
    "privatekey": "PrivateKey",
    "listenport": "ListenPort",
    "fwmark": "FwMark",
    "publickey": "PublicKey",
    "presharedkey": "PresharedKey",
    "allowedips": "AllowedIPs",
    "endpoint": "Endpoint",
    "persistentkeepalive": "PersistentKeepalive",
}


def _split_list(value: str) -> list[str]:
    return [item for item in _LIST_SEPARATORS.split(value) if item]


def parse(text: str, source: str = "<config>") -> Config:
    """Parse a configuration; ``source`` names it in errors. Raises :class:`ConfigError`."""
    parser = _Parser(source)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for raw in lines:
        parser.feed(raw)
    return parser.finish()


def load(path: Path | str, source: str | None = None) -> Config:
    """Read and parse a file; ConfigError (naming the file) if it cannot be read."""
    name = str(path) if source is None else source
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read the file: {e.strerror or e}", name) from None
    return parse(data.decode("utf-8", errors="surrogateescape"), name)


# ----------------------------------------------------------------------------------------
# Files and names


def valid_interface_name(name: str) -> bool:
    """Whether ``name`` is an interface name wg-quick accepts: 1 to 15 of [a-zA-Z0-9_=+.-]."""
    return _INTERFACE_NAME.fullmatch(name) is not None


def resolve_config_path(argument: str, config_dir: Path = CONFIG_DIR) -> Path:
    """The configuration file ``argument`` names, as wg-quick finds it: an interface name
    means ``/etc/wireguard/NAME.conf``, anything else is a path. ConfigError if the file does
    not exist or its name is not a valid interface name followed by ``.conf``."""
    path = config_dir / f"{argument}.conf" if valid_interface_name(argument) else Path(argument)
    if not path.exists():
        raise ConfigError(f"`{path}' does not exist")
    interface_name(path)
    return path


def interface_name(path: Path | str) -> str:
    """The interface a configuration file is for: its name without ``.conf``."""
    match = _CONFIG_FILE_NAME.search(str(path))
    if match is None:
        raise ConfigError(
            f"the name of the configuration file `{path}' must be a valid interface name "
            "(1 to 15 of a-z A-Z 0-9 _ = + . -) followed by .conf"
        )
    return match.group(1)


def is_world_accessible(path: Path | str) -> bool:
    """wg-quick's check: the file and its directory both grant some access to others."""
    real = os.path.realpath(path)
    file_mode = stat.S_IMODE(os.stat(real).st_mode)
    dir_mode = stat.S_IMODE(os.stat(os.path.dirname(real) or ".").st_mode)
    return bool(file_mode & dir_mode & 0o007)
