"""wgpy.host.policyroute: the exit node's policy routing as argv lists, and what it reads
from ``ip -json`` (outputs below as iproute2 6.x prints them)."""

from __future__ import annotations

import ipaddress

from wgpy.host import policyroute
from wgpy.host.policyroute import ExitRoutes, Rule

SERVER = ipaddress.ip_network("10.0.0.1/32")
LAN = ipaddress.ip_network("192.168.1.0/24")
LAN6 = ipaddress.ip_network("fd00:1::/64")


def test_the_rules_in_order_with_lan_through_the_exit_node() -> None:
    routes = ExitRoutes("wgpy0", 51820, (4,), bypass=(SERVER,), lan=(LAN,))
    assert [rule.add() for rule in routes.rules()] == [
        ["ip", "-4", "rule", "add", "pref", "5300", "to", "10.0.0.1/32", "lookup", "main"],
        ["ip", "-4", "rule", "add", "pref", "5305", "fwmark", "51820", "lookup", "main"],
        ["ip", "-4", "rule", "add", "pref", "5310", "to", "192.168.1.0/24", "lookup", "51820"],
        ["ip", "-4", "rule", "add", "pref", "5320", "lookup", "main", "suppress_prefixlength", "0"],
        ["ip", "-4", "rule", "add", "pref", "5330", "not", "fwmark", "51820", "lookup", "51820"],
    ]  # fmt: skip
    assert routes.routes() == [
        (
            4,
            ["ip", "-4", "route", "add", "default", "dev", "wgpy0", "table", "51820"],
            ["ip", "-4", "route", "del", "default", "dev", "wgpy0", "table", "51820"],
        )
    ]


def test_lan_access_keeps_the_connected_prefixes_on_the_main_table() -> None:
    routes = ExitRoutes("wgpy0", 51821, (4, 6), bypass=(SERVER,), lan=(LAN, LAN6), allow_lan=True)
    rules = routes.rules()
    assert [(r.version, r.priority, r.words) for r in rules] == [
        (4, 5300, ("to", "10.0.0.1/32", "lookup", "main")),
        (4, 5300, ("to", "192.168.1.0/24", "lookup", "main")),
        (4, 5320, ("lookup", "main", "suppress_prefixlength", "0")),
        (4, 5330, ("not", "fwmark", "51821", "lookup", "51821")),
        (6, 5300, ("to", "fd00:1::/64", "lookup", "main")),
        (6, 5320, ("lookup", "main", "suppress_prefixlength", "0")),
        (6, 5330, ("not", "fwmark", "51821", "lookup", "51821")),
    ]
    assert [version for version, _, _ in routes.routes()] == [4, 6]
    assert routes.routes()[1][1][:2] == ["ip", "-6"]


def test_a_rule_is_deleted_with_the_words_it_was_added_with() -> None:
    rule = Rule(6, 5330, ("not", "fwmark", "7", "lookup", "7"))
    assert rule.delete() == ["ip", "-6", "rule", "del", "pref", "5330", *rule.words]
    assert rule.add()[:4] == ["ip", "-6", "rule", "add"]


def test_a_bypass_address_given_twice_is_one_rule() -> None:
    routes = ExitRoutes("wgpy0", 1, (4,), bypass=(SERVER, SERVER), lan=(SERVER,), allow_lan=True)
    assert sum(rule.priority == 5300 for rule in routes.rules()) == 1


def test_host_networks_of_the_control_plane() -> None:
    assert policyroute.host_network("10.0.0.1") == SERVER
    assert policyroute.host_network("[2001:db8::1]") == ipaddress.ip_network("2001:db8::1/128")
    assert policyroute.host_network("::ffff:10.0.0.1") == SERVER
    for unusable in ("server.example", "127.0.0.1", "::1", "0.0.0.0", "fe80::1%eth0", ""):
        assert policyroute.host_network(unusable) is None, unusable


def test_the_first_free_table_from_51820() -> None:
    routes4 = (
        '[{"dst":"default","dev":"wg0","table":"51820","scope":"link","flags":[]},'
        '{"dst":"10.9.0.0/24","dev":"d0","protocol":"kernel","scope":"link","flags":[]},'
        '{"type":"local","dst":"127.0.0.1","dev":"lo","table":"local","flags":[]}]'
    )
    rules6 = (
        '[{"priority":0,"src":"all","table":"local"},{"priority":9,"src":"all","table":"51821"}]'
    )
    used = policyroute.used_tables([routes4, "not json"], [rules6, "[]"])
    assert used == {51820, 51821}
    assert policyroute.free_table(used) == 51822
    assert policyroute.free_table(set()) == 51820
    assert policyroute.routes_show(6) == ["ip", "-json", "-6", "route", "show", "table", "all"]
    assert policyroute.rules_show(4) == ["ip", "-json", "-4", "rule", "show"]


def test_connected_prefixes_are_the_kernels_link_routes_of_other_links() -> None:
    v4 = (
        '[{"dst":"default","gateway":"10.9.0.254","dev":"d0","flags":[]},'
        '{"dst":"10.9.0.0/24","dev":"d0","protocol":"kernel","scope":"link","flags":[]},'
        '{"dst":"10.8.0.0/16","gateway":"10.9.0.254","dev":"d0","protocol":"static","flags":[]},'
        '{"dst":"100.64.0.2","dev":"wgpy0","protocol":"kernel","scope":"link","flags":[]}]'
    )
    assert policyroute.connected_prefixes(v4, "wgpy0") == [ipaddress.ip_network("10.9.0.0/24")]
    v6 = (
        '[{"dst":"fd00:9::/64","dev":"d0","protocol":"kernel","metric":256,"flags":[]},'
        '{"dst":"fe80::/64","dev":"d0","protocol":"kernel","metric":256,"flags":[]},'
        '{"dst":"fd00:9::/64","dev":"d1","protocol":"kernel","metric":256,"flags":[]}]'
    )
    assert policyroute.connected_prefixes(v6, "wgpy0") == [ipaddress.ip_network("fd00:9::/64")]
    assert policyroute.connected_prefixes("garbage", "wgpy0") == []
    assert policyroute.connected_prefixes('{"not": "a list"}', "wgpy0") == []


def test_an_exit_node_masquerades_out_of_its_default_routes_interfaces() -> None:
    text = (
        '[{"dst":"default","gateway":"10.9.0.254","dev":"eth0","flags":[]},'
        '{"dst":"default","dev":"wgpy0","flags":[]},'
        '{"dst":"default","flags":[],"nexthops":[{"gateway":"10.8.0.1","dev":"eth1"},'
        '{"gateway":"10.9.0.1","dev":"eth0"}]}]'
    )
    assert policyroute.default_interfaces(text, "wgpy0") == ["eth0", "eth1"]
    assert policyroute.default_interfaces("", "wgpy0") == []
    assert policyroute.default_route_show(6) == ["ip", "-json", "-6", "route", "show", "default"]


def test_stale_rules_at_our_priorities_are_deleted_one_line_at_a_time() -> None:
    text = (
        "0:\tfrom all lookup local\n"
        "5300:\tfrom all to 10.0.0.1 lookup main\n"
        "5320:\tfrom all lookup main suppress_prefixlength 0\n"
        "5330:\tnot from all fwmark 0xca6c lookup 51820\n"
        "5330:\tnot from all fwmark 0x1 lookup 99\n"
        "32766:\tfrom all lookup main\n"
    )
    assert policyroute.stale_rules(4, text) == [
        ["ip", "-4", "rule", "del", "pref", "5300",
         "from", "all", "to", "10.0.0.1", "lookup", "main"],
        ["ip", "-4", "rule", "del", "pref", "5320",
         "from", "all", "lookup", "main", "suppress_prefixlength", "0"],
        ["ip", "-4", "rule", "del", "pref", "5330",
         "not", "from", "all", "fwmark", "0xca6c", "lookup", "51820"],
        ["ip", "-4", "rule", "del", "pref", "5330",
         "not", "from", "all", "fwmark", "0x1", "lookup", "99"],
    ]  # fmt: skip
    only = policyroute.stale_rules(6, text, table=99)
    assert [argv[5] for argv in only] == ["5300", "5320", "5330"] and only[2][-1] == "99"
