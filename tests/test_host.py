"""wgpy.host builds the host's commands without running them: each argv and script here is
the one the wg-quick script (wireguard-tools ``src/wg-quick/linux.bash``) runs, or the mesh
node's own; wgpy.host.run is tested on real programs."""

from __future__ import annotations

import asyncio
import ipaddress
import sys

import pytest

from wgpy.host import HostNetworkError, firewall, ip, resolvconf, sysctl
from wgpy.host.run import run, run_async

V4 = ipaddress.ip_interface("10.0.0.1/24")
V6 = ipaddress.ip_interface("fd00::1/64")


# ------------------------------------------------------------------ ip: wg-quick's


def test_addresses_and_link_as_wg_quick_spells_them() -> None:
    assert ip.address_add("wg0", V4) == ["ip", "-4", "address", "add", "10.0.0.1/24", "dev", "wg0"]
    assert ip.address_add("wg0", V6) == ["ip", "-6", "address", "add", "fd00::1/64", "dev", "wg0"]
    # the address as inet_ntop prints it, as wg-quick passes it on from the file
    mapped = ipaddress.ip_interface("::ffff:10.0.0.1/128")
    assert ip.address_add("wg0", mapped)[4] == "::ffff:10.0.0.1/128"
    assert ip.link_up("wg0", 1420) == ["ip", "link", "set", "mtu", "1420", "up", "dev", "wg0"]
    assert ip.link_delete("wg0") == ["ip", "link", "delete", "dev", "wg0"]
    assert ip.link_show("eth0") == ["ip", "link", "show", "dev", "eth0"]
    assert ip.address_show("wg0", "-6") == ["ip", "-o", "-6", "addr", "show", "dev", "wg0"]
    assert ip.address_brief("wg0") == ["ip", "-brief", "address", "show", "dev", "wg0"]


def test_routes_take_the_family_from_the_prefix() -> None:
    assert ip.family("10.0.0.0/8") == "-4" and ip.family("::/0") == "-6"
    assert ip.route_add("wg0", "10.0.0.0/8") == [
        "ip", "-4", "route", "add", "10.0.0.0/8", "dev", "wg0"
    ]  # fmt: skip
    assert ip.route_add("wg0", "fd00::/8", "1234") == [
        "ip", "-6", "route", "add", "fd00::/8", "dev", "wg0", "table", "1234"
    ]  # fmt: skip
    assert ip.route_show_match("wg0", "10.0.0.0/8") == [
        "ip", "-4", "route", "show", "dev", "wg0", "match", "10.0.0.0/8"
    ]  # fmt: skip
    assert ip.route_show_table("-6", 51820) == ["ip", "-6", "route", "show", "table", "51820"]
    assert ip.route_get("192.0.2.1") == ["ip", "route", "get", "192.0.2.1"]
    assert ip.route_show_default() == ["ip", "route", "show", "default"]


def test_default_route_is_wg_quicks_fwmark_policy_routing() -> None:
    assert ip.default_route("wg0", "0.0.0.0/0", 51820) == [
        ["ip", "-4", "route", "add", "0.0.0.0/0", "dev", "wg0", "table", "51820"],
        ["ip", "-4", "rule", "add", "not", "fwmark", "51820", "table", "51820"],
        ["ip", "-4", "rule", "add", "table", "main", "suppress_prefixlength", "0"],
    ]
    assert [argv[1] for argv in ip.default_route("wg0", "::/0", 7)] == ["-6", "-6", "-6"]


def test_rules_are_deleted_one_at_a_time_until_none_is_left() -> None:
    """As wg-quick's del_if: every rule of the table, then every suppressing rule."""
    rules = (
        "0:\tfrom all lookup local\n"
        "32764:\tfrom all lookup main suppress_prefixlength 0\n"
        "32765:\tnot from all fwmark 0xca6c lookup 51820\n"
        "32766:\tfrom all lookup main\n"
    )
    assert ip.rules_delete("-4", 51820, rules) == ["ip", "-4", "rule", "delete", "table", "51820"]
    rules = rules.replace("32765:\tnot from all fwmark 0xca6c lookup 51820\n", "")
    assert ip.rules_delete("-4", 51820, rules) == [
        "ip", "-4", "rule", "delete", "table", "main", "suppress_prefixlength", "0"
    ]  # fmt: skip
    rules = rules.replace("32764:\tfrom all lookup main suppress_prefixlength 0\n", "")
    assert ip.rules_delete("-4", 51820, rules) is None
    assert ip.rules_delete("-6", 51820, "") is None
    assert ip.rule_show("-6") == ["ip", "-6", "rule", "show"]


def test_parse_addresses_reads_ip_o_addr_show() -> None:
    text = (
        "5: wg0    inet 10.0.0.1/24 scope global wg0\\       valid_lft forever\n"
        "5: wg0    inet6 fd00::1/64 scope global \\       valid_lft forever\n"
        "garbage\n"
    )
    assert ip.parse_addresses(text) == ["10.0.0.1", "fd00::1"]
    assert ip.parse_addresses("") == []


# ------------------------------------------------------------------ ip: the mesh node's


def test_the_mesh_nodes_addresses_replace_and_v6_skips_dad() -> None:
    assert ip.address_replace("wgpy0", ipaddress.ip_interface("100.64.0.1/32")) == [
        "ip", "address", "replace", "100.64.0.1/32", "dev", "wgpy0"
    ]  # fmt: skip
    assert ip.address_replace("wgpy0", ipaddress.ip_interface("fd7a:115c:a1e0::1/128")) == [
        "ip", "address", "replace", "fd7a:115c:a1e0::1/128", "dev", "wgpy0", "nodad"
    ]  # fmt: skip
    assert ip.address_delete("wgpy0", V4) == ["ip", "address", "del", "10.0.0.1/24", "dev", "wgpy0"]
    assert ip.addresses_json() == ["ip", "-json", "address", "show"]


def test_the_resolvers_service_addresses_are_never_a_source() -> None:
    v4, v6 = (
        ipaddress.ip_interface("100.100.100.100/32"),
        ipaddress.ip_interface("fd7a:115c:a1e0::53/128"),
    )
    assert ip.service_address_replace("wgpy0", v4) == [
        "ip", "address", "replace", "100.100.100.100/32", "dev", "wgpy0", "scope", "host"
    ]  # fmt: skip
    assert ip.service_address_replace("wgpy0", v6) == [
        "ip", "address", "replace", "fd7a:115c:a1e0::53/128", "dev", "wgpy0", "nodad",
        "preferred_lft", "0",
    ]  # fmt: skip


def test_route_batch_removes_then_adds_in_one_ip() -> None:
    add = [ipaddress.ip_network("100.64.0.2/32"), ipaddress.ip_network("fd7a:115c:a1e0::2/128")]
    remove = [ipaddress.ip_network("100.64.0.3/32")]
    argv, stdin = ip.route_batch("wgpy0", add, remove) or ([], "")
    assert argv == ["ip", "-force", "-batch", "-"]
    assert stdin == (
        "route del 100.64.0.3/32 dev wgpy0\n"
        "route replace 100.64.0.2/32 dev wgpy0\n"
        "route replace fd7a:115c:a1e0::2/128 dev wgpy0\n"
    )
    assert ip.route_batch("wgpy0", [], []) is None


# ------------------------------------------------------------------ firewall


def test_nft_table_is_wg_quicks() -> None:
    assert firewall.nft_table("wg0", 51820, ["10.0.0.1"], v6=False) == (
        "add table ip wg-quick-wg0\n"
        "add chain ip wg-quick-wg0 preraw { type filter hook prerouting priority -300; }\n"
        "add chain ip wg-quick-wg0 premangle { type filter hook prerouting priority -150; }\n"
        "add chain ip wg-quick-wg0 postmangle { type filter hook postrouting priority -150; }\n"
        'add rule ip wg-quick-wg0 preraw iifname != "wg0" ip daddr 10.0.0.1 '
        "fib saddr type != local drop\n"
        "add rule ip wg-quick-wg0 postmangle meta l4proto udp mark 51820 ct mark set mark \n"
        "add rule ip wg-quick-wg0 premangle meta l4proto udp meta mark set ct mark \n"
    )
    v6 = firewall.nft_table("wg0", 7, ["fd00::1", "fd00::2"], v6=True)
    assert v6.startswith("add table ip6 wg-quick-wg0\n")
    assert v6.count("ip6 daddr fd00::") == 2
    assert firewall.NFT_APPLY == ["nft", "-f", "/dev/stdin"]


def test_iptables_restore_is_wg_quicks() -> None:
    marker = '-m comment --comment "wg-quick(8) rule for wg0"'
    assert firewall.iptables_restore("wg0", 51820, ["10.0.0.1"]) == (
        "*raw\n"
        f"-I PREROUTING ! -i wg0 -d 10.0.0.1 -m addrtype ! --src-type LOCAL -j DROP {marker}\n"
        "COMMIT\n*mangle\n"
        f"-I POSTROUTING -m mark --mark 51820 -p udp -j CONNMARK --save-mark {marker}\n"
        f"-I PREROUTING -p udp -j CONNMARK --restore-mark {marker}\n"
        "COMMIT\n"
    )
    assert firewall.iptables_program(v6=True) == "ip6tables"


def test_firewall_removal_deletes_only_this_interfaces() -> None:
    tables = "table ip wg-quick-wg0\ntable ip6 wg-quick-wg0\ntable ip wg-quick-wg01\ntable inet f\n"
    assert firewall.nft_delete("wg0", tables) == (
        "delete table ip wg-quick-wg0\ndelete table ip6 wg-quick-wg0\n"
    )
    assert firewall.nft_delete("wg1", tables) == ""
    marker = '-m comment --comment "wg-quick(8) rule for wg0"'
    saved = (
        "# Generated by iptables-save\n*raw\n:PREROUTING ACCEPT [0:0]\n"
        f"-A PREROUTING ! -i wg0 -d 10.0.0.1/32 -j DROP {marker}\n"
        "-A PREROUTING -j ACCEPT\nCOMMIT\n*filter\nCOMMIT\n"
    )
    assert firewall.iptables_delete("wg0", saved) == (
        f"*raw\n-D PREROUTING ! -i wg0 -d 10.0.0.1/32 -j DROP {marker}\nCOMMIT\n*filter\nCOMMIT\n"
    )
    assert firewall.iptables_delete("wg1", saved) is None


# ------------------------------------------------------------------ sysctl and resolvconf


def test_sysctl_and_its_proc_file() -> None:
    assert sysctl.set_value(sysctl.SRC_VALID_MARK, "1") == [
        "sysctl", "-q", "net.ipv4.conf.all.src_valid_mark=1"
    ]  # fmt: skip
    assert str(sysctl.proc_path(sysctl.SRC_VALID_MARK)) == (
        "/proc/sys/net/ipv4/conf/all/src_valid_mark"
    )


def test_resolvconf_as_wg_quick() -> None:
    assert resolvconf.add("tun.wg0") == ["resolvconf", "-a", "tun.wg0", "-m", "0", "-x"]
    assert resolvconf.delete("wg0") == ["resolvconf", "-d", "wg0", "-f"]
    assert resolvconf.records(["10.0.0.53", "fd00::53"], []) == (
        "nameserver 10.0.0.53\nnameserver fd00::53\n"
    )
    assert resolvconf.records(["10.0.0.53"], ["corp", "example"]) == (
        "nameserver 10.0.0.53\nsearch corp example\n"
    )


def test_resolvconf_name_takes_the_first_prefix_pattern_of_interface_order() -> None:
    order = "# interface-order\nlo.inet*\nlo.dnsmasq\n  tun*  \nwg*\n*\n"
    assert resolvconf.interface_name("wg0", order) == "tun.wg0"
    assert resolvconf.interface_name("wg0", "lo.inet*\n*\n") == "wg0"
    assert resolvconf.interface_name("wg0", None) == "wg0"


# ------------------------------------------------------------------ the runners


def test_run_returns_whatever_the_status_and_raises_for_no_program() -> None:
    ok = run([sys.executable, "-c", "import sys; print(sys.stdin.read().upper())"], input="x")
    assert (ok.returncode, ok.stdout) == (0, "X\n")
    failed = run([sys.executable, "-c", "import sys; sys.exit('no')"])
    assert (failed.returncode, failed.stderr) == (1, "no\n")
    with pytest.raises(FileNotFoundError):
        run(["/nonexistent/program"])


def test_run_async_says_which_command_failed_and_why() -> None:
    async def go() -> None:
        code = "import sys; print(sys.stdin.read()[::-1]); print(' ', file=sys.stderr)"
        assert await run_async([sys.executable, "-c", code], stdin="abc") == "cba\n"
        with pytest.raises(HostNetworkError, match=r"^`\S+ -c .*' failed: why$"):
            await run_async([sys.executable, "-c", "import sys; sys.exit('\\n why ')"])
        with pytest.raises(HostNetworkError, match=r"failed: exit status 3$"):
            await run_async([sys.executable, "-c", "import sys; sys.exit(3)"])
        with pytest.raises(HostNetworkError, match=r"^cannot run `/nonexistent/ip': "):
            await run_async(["/nonexistent/ip", "link"])
        with pytest.raises(HostNetworkError, match=r"did not finish in time$"):
            await run_async([sys.executable, "-c", "import time; time.sleep(10)"], timeout=0.2)

    asyncio.run(go())
