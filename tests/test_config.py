"""wgpy.config: the wg-quick configuration format, read as wg and wg-quick read it."""

from __future__ import annotations

import base64
import ipaddress
import os
import socket
import string
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgpy import config as wgconfig
from wgpy.config import Config, ConfigError, Endpoint, Interface, Peer, parse

K1 = bytes(range(32))
K2 = bytes(range(32, 64))
K3 = bytes(range(64, 96))
B1, B2, B3 = (base64.b64encode(k).decode() for k in (K1, K2, K3))
# A private key that is valid base64 but whose second-to-last character sets padding bits.
BAD_PADDING = B1[:-2] + "B="

FULL = f"""\
# wg0: everything wg-quick knows
[Interface]
PrivateKey = {B1}
ListenPort = 51820
Address = 10.0.0.1/24, fd00::1/64
Address = 10.0.1.1
MTU = 1380
DNS = 1.1.1.1, 2606:4700:4700::1111, example.com
DNS = corp.example
Table = 1234
FwMark = 0x10
PreUp = echo pre-up %i
PostUp = iptables -A FORWARD -i %i -j ACCEPT
PostUp = echo   two   spaces
PreDown = echo pre-down
PostDown = echo post-down
SaveConfig = true

[Peer]
PublicKey = {B2}
PresharedKey = {B3}
AllowedIPs = 10.0.0.2/32, fd00::2/128
AllowedIPs = 192.168.0.0/16
Endpoint = vpn.example.com:51820
PersistentKeepalive = 25

[Peer]
PublicKey = {B3}
AllowedIPs = 0.0.0.0/0, ::/0
Endpoint = [2001:db8::1]:4500
PersistentKeepalive = off
"""


def error_of(text: str, source: str = "wg0.conf") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text, source)
    return info.value


# ----------------------------------------------------------------------------------------
# Every key


def test_full_config() -> None:
    config = parse(FULL, "wg0.conf")
    iface = config.interface
    assert iface.private_key == K1
    assert iface.listen_port == 51820
    assert iface.addresses == [
        ipaddress.ip_interface("10.0.0.1/24"),
        ipaddress.ip_interface("fd00::1/64"),
        ipaddress.ip_interface("10.0.1.1/32"),
    ]
    assert iface.mtu == 1380
    assert iface.dns == [
        ipaddress.ip_address("1.1.1.1"),
        ipaddress.ip_address("2606:4700:4700::1111"),
    ]
    assert iface.dns_search == ["example.com", "corp.example"]
    assert iface.table == "1234"
    assert iface.fwmark == 16
    assert iface.pre_up == ["echo pre-up %i"]
    assert iface.post_up == ["iptables -A FORWARD -i %i -j ACCEPT", "echo   two   spaces"]
    assert iface.pre_down == ["echo pre-down"]
    assert iface.post_down == ["echo post-down"]
    assert iface.save_config is True
    first, second = config.peers
    assert first == Peer(
        public_key=K2,
        preshared_key=K3,
        endpoint=Endpoint("vpn.example.com", 51820),
        allowed_ips=[
            ipaddress.ip_network("10.0.0.2/32"),
            ipaddress.ip_network("fd00::2/128"),
            ipaddress.ip_network("192.168.0.0/16"),
        ],
        persistent_keepalive=25,
    )
    assert second == Peer(
        public_key=K3,
        endpoint=Endpoint("2001:db8::1", 4500),
        allowed_ips=[ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")],
        persistent_keepalive=0,
    )
    assert config.warnings == []


def test_empty_config_and_defaults() -> None:
    assert parse("") == Config()
    assert parse("# nothing\n\n   \n[Interface]\n") == Config()
    assert Config().interface == Interface()


def test_keys_and_sections_ignore_ascii_case_and_whitespace() -> None:
    text = (
        f"  [INTERFACE]  \r\n"
        f"privatekey={B1}\r\n"
        f"\tLISTENPORT\t=\t1\r\n"
        f"address = 10.0.0.1/8  # a comment\r\n"
        f"[ peer ]\r\n"
        f"Public Key = {B2[:20]} {B2[20:]}\r\n"  # wg drops every space, even inside
        f"Allowed IPs = 10.0.0.0 / 8 , fd00::/8\r\n"
        f"EndPoint = 192.0.2.1 : 1\r\n"
    )
    config = parse(text)
    assert config.interface.private_key == K1
    assert config.interface.listen_port == 1
    assert config.interface.addresses == [ipaddress.ip_interface("10.0.0.1/8")]
    assert config.peers[0].public_key == K2
    assert config.peers[0].allowed_ips == [
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("fd00::/8"),
    ]
    assert config.peers[0].endpoint == Endpoint("192.0.2.1", 1)


def test_non_ascii_case_folding_is_not_case_insensitivity() -> None:
    # "\u212a" (KELVIN SIGN) lowercases to "k" in Python, but strcasecmp does not fold it.
    err = error_of(f"[Interface]\nPrivate\u212aey = {B1}\n")
    assert "is not a key of [Interface]" in str(err)


def test_comments_cut_hooks_and_values() -> None:
    config = parse("[Interface]\nPostUp = echo a # not this\nMTU = 1400#x\n")
    assert config.interface.post_up == ["echo a"]
    assert config.interface.mtu == 1400


def test_last_value_wins_for_single_keys() -> None:
    config = parse(f"[Interface]\nListenPort = 1\nListenPort = 2\nPrivateKey = {B1}\n")
    assert config.interface.listen_port == 2


def test_address_lists() -> None:
    config = parse("[Interface]\nAddress = 10.0.0.1/24,,fd00::1/64  10.0.0.2\nAddress =\n")
    assert [str(a) for a in config.interface.addresses] == [
        "10.0.0.1/24",
        "fd00::1/64",
        "10.0.0.2/32",
    ]


@pytest.mark.parametrize(
    ("value", "servers", "search"),
    [
        ("1.1.1.1", ["1.1.1.1"], []),
        ("1.1.1.1,8.8.8.8", ["1.1.1.1", "8.8.8.8"], []),
        ("fe80::1%eth0, home.arpa", ["fe80::1%eth0"], ["home.arpa"]),
        ("a.example b.example", [], ["a.example", "b.example"]),
        ("", [], []),
    ],
)
def test_dns(value: str, servers: list[str], search: list[str]) -> None:
    iface = parse(f"[Interface]\nDNS = {value}\n").interface
    assert [str(a) for a in iface.dns] == servers
    assert iface.dns_search == search


@pytest.mark.parametrize(
    ("value", "table"),
    [("auto", "auto"), ("Off", "off"), ("off", "off"), ("1234", "1234"), ("007", "7")],
)
def test_table(value: str, table: str) -> None:
    assert parse(f"[Interface]\nTable = {value}\n").interface.table == table


def test_table_name_and_empty() -> None:
    assert parse("[Interface]\nTable = main\n").interface.table == "main"
    assert parse("[Interface]\nTable =\n").interface.table is None


@pytest.mark.parametrize(
    ("value", "fwmark"),
    [
        ("0", 0),
        ("off", 0),
        ("OFF", 0),
        ("51820", 51820),
        ("0xca6c", 0xCA6C),
        ("0xFFFFFFFF", 2**32 - 1),
    ],
)
def test_fwmark(value: str, fwmark: int) -> None:
    assert parse(f"[Interface]\nFwMark = {value}\n").interface.fwmark == fwmark


@pytest.mark.parametrize("value", ["0X10", "0x", "-1", "4294967296", "0x100000000", "1_000", "ten"])
def test_bad_fwmark(value: str) -> None:
    err = error_of(f"[Interface]\nFwMark = {value}\n")
    assert str(err) == (
        f"wg0.conf line 2: FwMark is neither off nor a number from 0 to 0xffffffff: {value!r}"
    )


@pytest.mark.parametrize(("value", "seconds"), [("25", 25), ("0", 0), ("off", 0), ("65535", 65535)])
def test_persistent_keepalive(value: str, seconds: int) -> None:
    text = f"[Peer]\nPublicKey = {B2}\nPersistentKeepalive = {value}\n"
    assert parse(text).peers[0].persistent_keepalive == seconds


@pytest.mark.parametrize("value", ["65536", "-1", "1.5", "never"])
def test_bad_persistent_keepalive(value: str) -> None:
    err = error_of(f"[Peer]\nPublicKey = {B2}\nPersistentKeepalive = {value}\n")
    assert err.line == 3
    assert "PersistentKeepalive is neither off nor a number" in str(err)


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("True", True), ("false", False)])
def test_save_config(value: str, expected: bool) -> None:
    assert parse(f"[Interface]\nSaveConfig = {value}\n").interface.save_config is expected


def test_listen_port_service_name() -> None:
    try:
        port = socket.getservbyname("domain", "udp")
    except OSError:  # pragma: no cover - a system without /etc/services
        pytest.skip("no services database")
    assert parse("[Interface]\nListenPort = domain\n").interface.listen_port == port


@pytest.mark.parametrize(
    ("text", "endpoint"),
    [
        ("192.0.2.1:51820", Endpoint("192.0.2.1", 51820)),
        ("[2001:db8::1]:1", Endpoint("2001:db8::1", 1)),
        ("[fe80::1%eth0]:1", Endpoint("fe80::1%eth0", 1)),
        ("vpn.example.com:0", Endpoint("vpn.example.com", 0)),
        ("2001:db8::1:51820", Endpoint("2001:db8::1", 51820)),  # wg splits at the last colon
    ],
)
def test_endpoint(text: str, endpoint: Endpoint) -> None:
    assert Endpoint.parse(text) == endpoint
    assert Endpoint.parse(str(endpoint)) == endpoint


@pytest.mark.parametrize(
    "text", ["", "host", "host:", ":1", "[::1]", "[::1]:", "[::1", "[::1]x1", "h:65536", "h:-1"]
)
def test_bad_endpoint(text: str) -> None:
    with pytest.raises(ValueError):
        Endpoint.parse(text)


def test_endpoint_str() -> None:
    assert str(Endpoint("2001:db8::1", 7)) == "[2001:db8::1]:7"
    assert str(Endpoint("192.0.2.1", 7)) == "192.0.2.1:7"
    assert Endpoint("192.0.2.1", 7).is_numeric
    assert Endpoint("fe80::1%eth0", 7).is_numeric
    assert not Endpoint("example.com", 7).is_numeric


def test_allowed_ip_host_bits_warn_and_are_masked() -> None:
    config = parse(f"[Peer]\nPublicKey = {B2}\nAllowedIPs = 10.0.0.7/24, fd00::1/64\n", "x.conf")
    assert config.peers[0].allowed_ips == [
        ipaddress.ip_network("10.0.0.0/24"),
        ipaddress.ip_network("fd00::/64"),
    ]
    assert config.warnings == [
        "x.conf line 3: AllowedIPs entry 10.0.0.7/24 has a nonzero host part; it means 10.0.0.0/24",
        "x.conf line 3: AllowedIPs entry fd00::1/64 has a nonzero host part; it means fd00::/64",
    ]


# ----------------------------------------------------------------------------------------
# Errors name the file and the line


def test_bad_private_key_names_file_and_line() -> None:
    err = error_of(f"[Interface]\n# the key\nPrivateKey = {B1[:-1]}\n")
    assert str(err) == (
        "wg0.conf line 3: PrivateKey is not a valid key: "
        "expected 44 characters of base64 encoding 32 bytes, got 43"
    )
    assert (err.source, err.line) == ("wg0.conf", 3)


@pytest.mark.parametrize("key", ["PublicKey", "PresharedKey"])
def test_bad_peer_keys(key: str) -> None:
    extra = f"PublicKey = {B2}\n" if key != "PublicKey" else ""
    err = error_of(f"[Peer]\n{extra}{key} = {BAD_PADDING}\n")
    assert str(err).startswith(f"wg0.conf line {2 + bool(extra)}: {key} is not a valid key: ")
    assert "padding bits" in str(err)


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("ListenPort = 1\n", 1,
         "ListenPort is outside any section; put it under [Interface] or [Peer]"),
        ("[Interface]\n[Peers]\n", 2, "[Peers] is not a section; expected [Interface] or [Peer]"),
        ("[Interface]\nFoo = bar\n", 2, "Foo is not a key of [Interface]"),
        ("[Interface]\nPrivateKey\n", 2, "expected `Key = Value' or a [Section], got `PrivateKey'"),
        ("[Interface]\nPrivateKey =\n", 2, "PrivateKey has no value"),
        ("[Interface]\n = 1\n", 2, "there is no key before the `=' in `= 1'"),
        ("[Interface]\nListenPort = 65536\n", 2,
         "ListenPort is not a valid port: expected a port number from 0 to 65535, got '65536'"),
        ("[Interface]\nAddress = 10.0.0.300/24\n", 2,
         "Address '10.0.0.300/24' is not an IP address with an optional /prefix length"),
        ("[Interface]\nDNS = 1.2.3\n", 2, "DNS server '1.2.3' is not an IP address"),
        ("[Interface]\nMTU = 9x\n", 2, "MTU is not a number from 68 to 65535: '9x'"),
        ("[Interface]\nMTU = 65536\n", 2, "MTU is not a number from 68 to 65535: '65536'"),
        ("[Interface]\nTable = 1 2\n", 2,
         "Table is not auto, off, a table number or a table name: '1 2'"),
        ("[Interface]\nSaveConfig = yes\n", 2, "SaveConfig is neither true nor false: 'yes'"),
        ("[Interface]\nPublicKey = x\n", 2,
         "PublicKey belongs in a [Peer] section, not in [Interface]"),
        (f"[Peer]\nPublicKey = {B2}\nAddress = 10.0.0.1\n", 3,
         "Address belongs in the [Interface] section, not in [Peer]"),
        (f"[Peer]\nPublicKey = {B2}\nMystery = 1\n", 3, "Mystery is not a key of [Peer]"),
        (f"[Peer]\nPublicKey = {B2}\nAllowedIPs =\n", 3, "AllowedIPs has no value"),
        (f"[Peer]\nPublicKey = {B2}\nAllowedIPs = 10.0.0.0/33\n", 3,
         "AllowedIPs entry '10.0.0.0/33' has a prefix length that is not a number from 0 to 32"),
        (f"[Peer]\nPublicKey = {B2}\nAllowedIPs = 10.0.0.0/8,\n", 3,
         "AllowedIPs entry '' is not an IP address"),
        (f"[Peer]\nPublicKey = {B2}\nAllowedIPs = fe80::1%eth0/128\n", 3,
         "AllowedIPs entry 'fe80::1%eth0/128' has a scope, which it cannot have"),
        (f"[Peer]\nPublicKey = {B2}\nEndpoint = [::1]\n", 3,
         "Endpoint is not valid: there is no port after the ']' in '[::1]'"),
        ("[Interface]\n\n[Peer]\nAllowedIPs = 10.0.0.0/8\n", 3,
         "this [Peer] section has no PublicKey"),
        (f"[Peer]\nPublicKey = {B2}\n[Peer]\n", 3, "this [Peer] section has no PublicKey"),
        ("[Interface]\nPostUp = a\0b\n", 2, "the line contains a NUL character"),
    ],
)  # fmt: skip
def test_errors(text: str, line: int, reason: str) -> None:
    err = error_of(text)
    assert (err.line, err.reason) == (line, reason)
    assert str(err) == f"wg0.conf line {line}: {reason}"


def test_load_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "wg7.conf"
    path.write_text("[Interface]\nListenPort = x y\n")
    with pytest.raises(ConfigError, match=rf"^{tmp_path}/wg7.conf line 2: ListenPort"):
        wgconfig.load(path)
    with pytest.raises(ConfigError, match=r"^shown.conf: cannot read the file: No such file"):
        wgconfig.load(tmp_path / "missing.conf", source="shown.conf")


# ----------------------------------------------------------------------------------------
# Writing


def test_to_wg_quick() -> None:
    assert (
        parse(FULL).to_wg_quick()
        == f"""\
[Interface]
Address = 10.0.0.1/24
Address = fd00::1/64
Address = 10.0.1.1/32
DNS = 1.1.1.1
DNS = 2606:4700:4700::1111
DNS = example.com
DNS = corp.example
MTU = 1380
Table = 1234
SaveConfig = true
PreUp = echo pre-up %i
PostUp = iptables -A FORWARD -i %i -j ACCEPT
PostUp = echo   two   spaces
PreDown = echo pre-down
PostDown = echo post-down
ListenPort = 51820
FwMark = 0x10
PrivateKey = {B1}

[Peer]
PublicKey = {B2}
PresharedKey = {B3}
AllowedIPs = 10.0.0.2/32, fd00::2/128, 192.168.0.0/16
Endpoint = vpn.example.com:51820
PersistentKeepalive = 25

[Peer]
PublicKey = {B3}
AllowedIPs = 0.0.0.0/0, ::/0
Endpoint = [2001:db8::1]:4500
PersistentKeepalive = off
"""
    )


def test_to_wg_quick_round_trips() -> None:
    config = parse(FULL)
    assert parse(config.to_wg_quick()) == config
    assert Config().to_wg_quick() == "[Interface]\n"


def test_addresses_are_written_as_the_c_library_writes_them() -> None:
    config = parse(f"[Peer]\nPublicKey = {B2}\nAllowedIPs = ::ffff:1.2.3.4/128, ::102:304\n")
    assert "AllowedIPs = ::ffff:1.2.3.4/128, ::1.2.3.4/128\n" in config.to_wg_quick()


def test_to_uapi_set() -> None:
    config = parse(FULL).with_resolved_endpoints(lambda e: Endpoint("192.0.2.9", e.port))
    assert config.to_uapi_set() == (
        "set=1\n"
        f"private_key={K1.hex()}\n"
        "listen_port=51820\n"
        "fwmark=16\n"
        "replace_peers=true\n"
        f"public_key={K2.hex()}\n"
        f"preshared_key={K3.hex()}\n"
        "endpoint=192.0.2.9:51820\n"
        "persistent_keepalive_interval=25\n"
        "replace_allowed_ips=true\n"
        "allowed_ip=10.0.0.2/32\n"
        "allowed_ip=fd00::2/128\n"
        "allowed_ip=192.168.0.0/16\n"
        f"public_key={K3.hex()}\n"
        "endpoint=[2001:db8::1]:4500\n"
        "persistent_keepalive_interval=0\n"
        "replace_allowed_ips=true\n"
        "allowed_ip=0.0.0.0/0\n"
        "allowed_ip=::/0\n"
        "\n"
    )


def test_to_uapi_set_of_an_empty_config_clears_everything_as_setconf_does() -> None:
    assert Config().to_uapi_set() == (
        f"set=1\nprivate_key={'0' * 64}\nlisten_port=0\nfwmark=0\nreplace_peers=true\n\n"
    )


def test_to_uapi_set_needs_resolved_endpoints() -> None:
    with pytest.raises(ValueError, match="has not been resolved"):
        parse(FULL).to_uapi_set()


def test_with_resolved_endpoints_leaves_numeric_ones_and_the_original_alone() -> None:
    config = parse(FULL)
    seen: list[Endpoint] = []

    def resolve(e: Endpoint) -> Endpoint:
        seen.append(e)
        return Endpoint("192.0.2.9", e.port)

    resolved = config.with_resolved_endpoints(resolve)
    assert seen == [Endpoint("vpn.example.com", 51820)]
    assert config.peers[0].endpoint == Endpoint("vpn.example.com", 51820)
    assert resolved.peers[0].endpoint == Endpoint("192.0.2.9", 51820)
    assert resolved.peers[1] is config.peers[1]


# ----------------------------------------------------------------------------------------
# Resolving endpoints


def test_resolve_numeric_endpoints() -> None:
    assert wgconfig.resolve_endpoint(Endpoint("127.0.0.1", 5)) == Endpoint("127.0.0.1", 5)
    assert wgconfig.resolve_endpoint(Endpoint("::1", 5)) == Endpoint("::1", 5)
    # getaddrinfo accepts what inet_aton does, and the result is written canonically.
    assert wgconfig.resolve_endpoint(Endpoint("127.1", 5)) == Endpoint("127.0.0.1", 5)


def test_resolve_retries_transient_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = socket.getaddrinfo

    def flaky(host, port, *args):  # type: ignore[no-untyped-def]
        calls.append(host)
        if len(calls) < 3:
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real("192.0.2.4", port, *args)

    monkeypatch.setattr(socket, "getaddrinfo", flaky)
    sleeps: list[float] = []
    messages: list[str] = []
    result = wgconfig.resolve_endpoint(
        Endpoint("vpn.example", 9), sleep=sleeps.append, on_retry=messages.append
    )
    assert result == Endpoint("192.0.2.4", 9)
    assert sleeps == [1.0, 1.2]
    assert messages[0] == (
        "Temporary failure in name resolution: `vpn.example:9'. Trying again in 1.00 seconds..."
    )
    calls.clear()
    with pytest.raises(socket.gaierror):
        wgconfig.resolve_endpoint(Endpoint("vpn.example", 9), retries=1, sleep=sleeps.append)
    assert len(calls) == 2


def test_resolve_gives_up_at_once_on_permanent_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(*args):  # type: ignore[no-untyped-def]
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", missing)
    with pytest.raises(socket.gaierror, match="Name or service not known"):
        wgconfig.resolve_endpoint(Endpoint("nowhere.invalid", 9), sleep=pytest.fail)


# ----------------------------------------------------------------------------------------
# Files and names


def test_resolve_config_path(tmp_path: Path) -> None:
    (tmp_path / "wg0.conf").write_text("")
    assert wgconfig.resolve_config_path("wg0", tmp_path) == tmp_path / "wg0.conf"
    assert wgconfig.resolve_config_path(str(tmp_path / "wg0.conf")) == tmp_path / "wg0.conf"
    with pytest.raises(ConfigError, match=rf"^`{tmp_path}/wg1.conf' does not exist$"):
        wgconfig.resolve_config_path("wg1", tmp_path)
    (tmp_path / "a-name-that-is-too-long.conf").write_text("")
    with pytest.raises(ConfigError, match="must be a valid interface name"):
        wgconfig.resolve_config_path(str(tmp_path / "a-name-that-is-too-long.conf"))
    (tmp_path / "wg0.txt").write_text("")
    with pytest.raises(ConfigError, match="must be a valid interface name"):
        wgconfig.resolve_config_path(str(tmp_path / "wg0.txt"))


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("wg0.conf", "wg0"),
        ("/etc/wireguard/wg0.conf", "wg0"),
        ("./a_b=c+d.e-f.conf", "a_b=c+d.e-f"),
        ("/x/fifteen-chars-1.conf", "fifteen-chars-1"),
    ],
)
def test_interface_name(path: str, name: str) -> None:
    assert wgconfig.interface_name(path) == name


@pytest.mark.parametrize("path", ["/x/sixteen-chars-12.conf", "/x/a b.conf", "/x/.conf", "wg0"])
def test_bad_interface_name(path: str) -> None:
    with pytest.raises(ConfigError):
        wgconfig.interface_name(path)


def test_valid_interface_name() -> None:
    assert wgconfig.valid_interface_name("wg0")
    assert not wgconfig.valid_interface_name("")
    assert not wgconfig.valid_interface_name("x" * 16)
    assert not wgconfig.valid_interface_name("wg/0")


def test_world_accessible_as_wg_quick_checks_it(tmp_path: Path) -> None:
    directory = tmp_path / "d"
    directory.mkdir()
    path = directory / "wg0.conf"
    path.write_text("")
    for file_mode, dir_mode, expected in [
        (0o600, 0o755, False),
        (0o644, 0o755, True),
        (0o604, 0o705, True),
        (0o604, 0o701, False),
        (0o644, 0o700, False),  # wg-quick ands the file's and the directory's bits
    ]:
        os.chmod(path, file_mode)
        os.chmod(directory, dir_mode)
        assert wgconfig.is_world_accessible(path) is expected, (oct(file_mode), oct(dir_mode))
    os.chmod(directory, 0o700)


# ----------------------------------------------------------------------------------------
# Properties

KEY_NAMES = [
    "PrivateKey", "ListenPort", "FwMark", "Address", "DNS", "MTU", "Table", "PreUp", "PostUp",
    "PreDown", "PostDown", "SaveConfig", "PublicKey", "PresharedKey", "AllowedIPs", "Endpoint",
    "PersistentKeepalive", "privatekey", "Private Key", "Bogus",
]  # fmt: skip
VALUES = [
    B1, B2, BAD_PADDING, "off", "0x10", "0X10", "51820", "65536", "10.0.0.1/24", "fd00::/8",
    "::ffff:1.2.3.4/128", "fe80::1%lo/64", "[::1]:1", "h:1", "h:", "[", "true", "auto", "1.1.1.1",
    "example.com", "%i", "", "=", "#", ",", "1,2", "domain", "-1", "99999999999999999999",
]  # fmt: skip

line = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["[Interface]", "[Peer]", "[ Peer ]", "[peer", "[]", "#", "="]),
    st.builds(
        lambda k, sep, v, tail: f"{k}{sep}{v}{tail}",
        st.sampled_from(KEY_NAMES),
        st.sampled_from(["=", " = ", "\t=", ""]),
        st.one_of(st.sampled_from(VALUES), st.text(max_size=20)),
        st.sampled_from(["", " ", "\r", " # c", ", 10.0.0.0/8"]),
    ),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(line, max_size=12))
def test_random_lines_only_ever_raise_config_errors(lines: list[str]) -> None:
    text = "\n".join(lines)
    try:
        config = parse(text, "fuzz.conf")
    except ConfigError as e:
        assert str(e).startswith("fuzz.conf")
        assert e.line is not None and 1 <= e.line <= max(1, len(text.split("\n")))
        return
    # Whatever was accepted is written back and read again to the same configuration.
    assert parse(config.to_wg_quick()) == config


keys_ = st.binary(min_size=32, max_size=32)
hosts = st.one_of(
    st.ip_addresses().map(str),
    st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z][a-z0-9-]{0,10}){0,2}", fullmatch=True),
)
endpoints = st.builds(Endpoint, hosts, st.integers(0, 65535))
networks = st.builds(
    lambda ip, bits: ipaddress.ip_network((ip, bits % (ip.max_prefixlen + 1)), strict=False),
    st.ip_addresses(),
    st.integers(0, 128),
)
interfaces = st.builds(
    lambda ip, bits: ipaddress.ip_interface((ip, bits % (ip.max_prefixlen + 1))),
    st.ip_addresses(),
    st.integers(0, 128),
)
hook_text = (
    st.text(
        alphabet=st.characters(blacklist_characters="\n#\0", blacklist_categories=("Cs",)),
        min_size=1,
        max_size=20,
    )
    .map(lambda s: s.strip(" \t\n\v\f\r"))
    .filter(bool)
)
search_domains = st.from_regex(r"[a-z][a-z0-9-]{0,8}(\.[a-z]{1,5})?", fullmatch=True)
tables = st.one_of(
    st.sampled_from(["auto", "off", "main"]),
    st.integers(0, 2**32 - 1).map(str),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,10}", fullmatch=True).filter(
        lambda t: t.lower() not in ("auto", "off")
    ),
)
configs = st.builds(
    Config,
    interface=st.builds(
        Interface,
        private_key=st.none() | keys_,
        listen_port=st.none() | st.integers(0, 65535),
        fwmark=st.none() | st.integers(0, 2**32 - 1),
        addresses=st.lists(interfaces, max_size=3),
        mtu=st.none() | st.integers(68, 65535),
        dns=st.lists(st.ip_addresses(), max_size=3),
        dns_search=st.lists(search_domains, max_size=2),
        table=st.none() | tables,
        pre_up=st.lists(hook_text, max_size=2),
        post_up=st.lists(hook_text, max_size=2),
        pre_down=st.lists(hook_text, max_size=2),
        post_down=st.lists(hook_text, max_size=2),
        save_config=st.booleans(),
    ),
    peers=st.lists(
        st.builds(
            Peer,
            public_key=keys_,
            preshared_key=st.none() | keys_,
            endpoint=st.none() | endpoints,
            allowed_ips=st.lists(networks, max_size=4),
            persistent_keepalive=st.none() | st.integers(0, 65535),
        ),
        max_size=3,
    ),
)


@settings(max_examples=300, deadline=None)
@given(configs)
def test_round_trip(config: Config) -> None:
    text = config.to_wg_quick()
    assert parse(text) == config
    assert parse(text).to_wg_quick() == text


@settings(max_examples=100, deadline=None)
@given(configs)
def test_to_uapi_set_lines(config: Config) -> None:
    config = config.with_resolved_endpoints(lambda e: Endpoint("192.0.2.1", e.port))
    text = config.to_uapi_set()
    assert text.startswith("set=1\n") and text.endswith("\n\n")
    lines = text[:-2].split("\n")
    assert all("=" in line for line in lines)
    assert sum(line.startswith("public_key=") for line in lines) == len(config.peers)
    assert sum(line.startswith("allowed_ip=") for line in lines) == sum(
        len(p.allowed_ips) for p in config.peers
    )
    allowed = string.hexdigits + ".:/"
    for line in lines:
        key, _, value = line.partition("=")
        if key == "allowed_ip":
            assert set(value) <= set(allowed)
