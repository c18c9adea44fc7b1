"""wgpy/host/resolved.py: systemd-resolved's per-link split DNS, as argv lists."""

from __future__ import annotations

import ipaddress

import pytest

from wgpy.host import resolved


def test_split_dns_commands() -> None:
    v4, v6 = ipaddress.ip_address("100.64.0.1"), ipaddress.ip_address("fd7a:115c:a1e0::1")
    assert resolved.dns("wg0", v4) == ["resolvectl", "dns", "wg0", "100.64.0.1"]
    assert resolved.dns("wg0", v4, 5353) == ["resolvectl", "dns", "wg0", "100.64.0.1:5353"]
    assert resolved.dns("wg0", v6, 5353)[-1] == "[fd7a:115c:a1e0::1]:5353"
    assert resolved.domains("wg0", ["mesh.internal", "~corp.example."]) == [
        "resolvectl",
        "domain",
        "wg0",
        "~mesh.internal",
        "~corp.example",
    ]
    assert resolved.default_route("wg0") == ["resolvectl", "default-route", "wg0", "false"]
    assert resolved.revert("wg0") == ["resolvectl", "revert", "wg0"]
    with pytest.raises(ValueError, match="at least one domain"):
        resolved.domains("wg0", [])


@pytest.mark.parametrize(
    ("text", "stub"),
    [
        ("# stub\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n", True),
        ("nameserver 127.0.0.54\n", True),
        ("nameserver 127.0.0.53\nnameserver 192.0.2.1\n", False),  # not only the stub
        ("nameserver 192.0.2.1\nsearch example.com\n", False),
        ("", False),
        ("# nameserver 127.0.0.53\n", False),
    ],
)
def test_which_hosts_resolved_manages(text: str, stub: bool) -> None:
    assert resolved.manages_resolv_conf(text) is stub


def test_search_domains_are_plain_and_not_repeated_as_routing_ones() -> None:
    assert resolved.domains("wg0", ["mesh.internal", "corp.example"], ["mesh.internal."]) == [
        "resolvectl",
        "domain",
        "wg0",
        "mesh.internal",
        "~corp.example",
    ]
    assert resolved.domains("wg0", [], ["mesh.internal"])[3:] == ["mesh.internal"]
