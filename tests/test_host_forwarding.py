"""wgpy.host.forwarding: the sysctl argv and the ``wgpy-nat`` nftables scripts, read as text
(tests/interop/test_forwarding_nft.py applies them with the real ``nft``)."""

from __future__ import annotations

import pytest

from wgpy.host import forwarding


def test_forwarding_switches_per_ip_version() -> None:
    assert forwarding.forwarding_keys([4]) == ["net.ipv4.ip_forward"]
    assert forwarding.forwarding_keys([6, 4]) == [
        "net.ipv4.ip_forward",
        "net.ipv6.conf.all.forwarding",
    ]
    assert forwarding.forwarding_keys([]) == []
    assert forwarding.read_forwarding("net.ipv4.ip_forward") == [
        "sysctl",
        "-n",
        "net.ipv4.ip_forward",
    ]
    assert forwarding.set_forwarding("net.ipv4.ip_forward", True) == [
        "sysctl",
        "-q",
        "net.ipv4.ip_forward=1",
    ]
    assert forwarding.set_forwarding("net.ipv6.conf.all.forwarding", False)[-1].endswith("=0")


def test_the_nat_table_masquerades_what_leaves_the_mesh() -> None:
    script = forwarding.nat_script("wgpy0")
    assert script == (
        "add table inet wgpy-nat\n"
        "delete table inet wgpy-nat\n"
        "add table inet wgpy-nat\n"
        "add chain inet wgpy-nat postrouting"
        " { type nat hook postrouting priority 100; policy accept; }\n"
        'add rule inet wgpy-nat postrouting iifname "wgpy0" oifname != "wgpy0" masquerade\n'
    )
    only = forwarding.nat_script("wgpy0", ["eth0", "wlan0"])
    assert only.endswith('iifname "wgpy0" oifname { "eth0", "wlan0" } masquerade\n')
    assert forwarding.nat_delete_script() == "add table inet wgpy-nat\ndelete table inet wgpy-nat\n"


@pytest.mark.parametrize("name", ['wg0" accept', "", "a" * 16, "eth0;"])
def test_a_name_that_is_no_interface_s_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="is not an interface name"):
        forwarding.nat_script(name)
    with pytest.raises(ValueError, match="is not an interface name"):
        forwarding.nat_script("wgpy0", [name])
