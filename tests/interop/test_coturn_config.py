"""The relay's configuration and the lab's router rules, checked without running them
(test_nat_lab.py runs them): examples/coturn.conf denies relaying into private and
special-purpose networks and comments every setting; the test relay's config keeps the
example's settings and replaces only what a test must; REST credentials match an independent
implementation; each router kind's nftables rules say what the kind is."""

from __future__ import annotations

import ipaddress
import itertools
from pathlib import Path

import pytest

from .coturn import (
    EXAMPLE,
    LAB_PEER_RANGES,
    OVERRIDDEN,
    coturn_config,
    coturn_range,
    peer_ranges,
    rest_credentials,
    settings,
)
from .nat_lab import KINDS, lan_networks, ruleset

# Addresses a relay must never send to: private, loopback, link-local (the cloud's metadata
# service), carrier-grade NAT and mesh overlays, multicast, and IPv6 spellings of IPv4.
FORBIDDEN = [
    "0.1.2.3", "10.1.2.3", "100.64.0.1", "100.100.100.100", "127.0.0.1", "127.1.2.3",
    "169.254.169.254", "172.16.0.1", "172.31.255.255", "192.0.0.8", "192.168.1.1",
    "198.18.0.1", "224.0.0.251", "239.255.255.250", "255.255.255.255",
    "::", "::1", "::ffff:10.0.0.1", "::ffff:127.0.0.1", "64:ff9b::a00:1", "2002:a00:1::1",
    "fd7a:115c:a1e0::1", "fc00::1", "fe80::1", "ff02::1", "2001:db8::1", "100::1",
]  # fmt: skip
PUBLIC = ["1.1.1.1", "8.8.8.8", "9.9.9.9", "100.128.0.1", "2606:4700:4700::1111", "2a00:1450::1"]


def denied(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return any(
        first.version == ip.version and first <= ip <= last
        for first, last in peer_ranges(EXAMPLE.read_text())
    )


@pytest.mark.parametrize("address", FORBIDDEN)
def test_example_denies_private_and_special_purpose_peers(address: str) -> None:
    assert denied(address)


@pytest.mark.parametrize("address", PUBLIC)
def test_example_relays_to_public_peers(address: str) -> None:
    assert not denied(address)


def test_example_ranges_are_well_formed_and_every_setting_is_commented() -> None:
    text = EXAMPLE.read_text()
    for first, last in peer_ranges(text):
        assert first.version == last.version and first <= last
    lines = text.splitlines()
    for above, line in itertools.pairwise(lines):
        if line.strip() and not line.startswith("#"):
            assert "#" not in line, f"coturn reads no inline comment: {line!r}"
            assert above.startswith("#"), f"no comment right above {line!r}"
    names = {name for name, _ in settings(text)}
    assert {"use-auth-secret", "no-cli", "no-multicast-peers", "realm"} <= names
    assert ("tls-listening-port", "443") in settings(text)


def test_lab_config_keeps_the_example_and_replaces_addresses_and_secrets(tmp_path: Path) -> None:
    config = coturn_config(
        addresses=["203.0.113.3", "203.0.113.4", "2001:db8::3"],
        port=3478,
        tls_port=443,
        secret="s3cret",
        cert=tmp_path / "c.pem",
        key=tmp_path / "k.pem",
        workdir=tmp_path,
        allowed_peers=LAB_PEER_RANGES,
    )
    got = settings(config)
    kept = [s for s in settings(EXAMPLE.read_text()) if s[0] not in OVERRIDDEN]
    assert got[: len(kept)] == kept
    assert ("denied-peer-ip", "10.0.0.0-10.255.255.255") in kept
    assert ("static-auth-secret", "s3cret") in got
    assert [v for n, v in got if n == "listening-ip"] == [
        "203.0.113.3",
        "203.0.113.4",
        "2001:db8::3",
    ]
    assert [v for n, v in got if n == "relay-ip"] == ["203.0.113.3", "2001:db8::3"]
    assert ("allowed-peer-ip", "203.0.113.0-203.0.113.255") in got
    assert not {"proc-user", "syslog", "external-ip"} & {n for n, _ in got}
    assert "allow-loopback-peers" not in {n for n, _ in got}


def test_coturn_range_spells_prefixes_as_first_last() -> None:
    assert coturn_range("10.0.0.0/8") == "10.0.0.0-10.255.255.255"
    assert coturn_range("::1/128") == "::1"
    assert coturn_range("fc00::/7") == "fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"


def test_rest_credentials_match_an_independent_hmac() -> None:
    # From: echo -n "1700003600:node-a" | openssl dgst -sha1 -hmac north -binary | base64
    assert rest_credentials("north", "node-a", ttl=3600, now=1_700_000_000.7) == (
        "1700003600:node-a",
        "H1GJABzrSC+lyMtC5UPp4MXj+vU=",
    )


def test_router_rules_say_what_each_kind_does() -> None:
    rules = {kind: ruleset(kind) for kind in KINDS}
    for text in rules.values():
        assert 'iifname "wan0" ct state new counter drop' in text  # to the router itself
        assert "type filter hook forward priority filter; policy drop;" in text
    assert "masquerade\n" in rules["easy"] and "fully-random" not in rules["easy"]
    assert "masquerade fully-random" in rules["hard"]
    assert "masquerade" not in rules["firewall"]
    assert "meta l4proto udp counter drop" in rules["udp_blocked"]
    assert "masquerade\n" in rules["udp_blocked"]
    with pytest.raises(ValueError, match="unknown router kind"):
        ruleset("symmetric")


def test_lan_networks_are_private_behind_a_nat_and_public_behind_a_firewall() -> None:
    assert [str(n) for n in lan_networks(3, "easy")] == ["192.168.3.0/24", "2001:db8:3::/64"]
    assert [str(n) for n in lan_networks(12, "firewall")] == ["198.18.12.0/24", "2001:db8:c::/64"]
    with pytest.raises(ValueError, match="outside"):
        lan_networks(0, "hard")
