"""Forwarding for a subnet router or an exit node: the kernel's IP forwarding switches and
the ``wgpy-nat`` nftables table that masquerades what comes out of the mesh.

Builds commands and scripts from plain values and runs nothing (as the rest of wgpy.host):

- :func:`read_forwarding` / :func:`set_forwarding`: ``sysctl`` argv for ``net.ipv4.ip_forward``
  and ``net.ipv6.conf.all.forwarding``; a node turns on only the family it routes, and puts
  back at ``down`` a switch it turned on (one that was on stays on);
- :func:`nat_script`: the ``nft -f /dev/stdin`` script that (re)makes the table
  ``inet wgpy-nat``: a NAT postrouting chain that masquerades packets that came in on the
  mesh interface and leave by another one (or only by the ones named: an exit node names its
  default route's), as Tailscale's ``--snat-subnet-routes`` does. Hosts on the LAN then see
  the router's own address and need no route back into the mesh;
- :func:`nat_delete_script`: the script that takes the table away, whether it is there or not;
- :func:`filter_script`: the table ``inet wgpy-filter``, whose forward chain lets through from
  the mesh only what the policy lets each peer reach through this node (its source addresses
  to the prefixes the map's ``routed_for`` gives it) and drops the rest: without it a peer
  allowed to reach the router could add a route on its own device and reach any network
  behind it, or use a subnet router as an exit node; :func:`filter_delete_script` removes it.

A router's NAT is its own table: the host's other rules (firewalld, docker, wg-quick's
``wg-quick-IFNAME``) are never touched, and deleting the table is the whole undo.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

from .sysctl import set_value

__all__ = [
    "FILTER_TABLE",
    "IPV4_FORWARD",
    "IPV6_FORWARD",
    "NAT_TABLE",
    "NFT_APPLY",
    "filter_delete_script",
    "filter_script",
    "forwarding_keys",
    "nat_delete_script",
    "nat_script",
    "read_forwarding",
    "set_forwarding",
]

IPV4_FORWARD = "net.ipv4.ip_forward"
IPV6_FORWARD = "net.ipv6.conf.all.forwarding"
FILTER_TABLE = "wgpy-filter"  # family inet: what the mesh may send through this node
NAT_TABLE = "wgpy-nat"  # family inet: one table for IPv4 and IPv6
NFT_APPLY = ["nft", "-f", "/dev/stdin"]  # the script on stdin
_IFNAME = re.compile(r"^[a-zA-Z0-9_=+.:-]{1,15}$")


def forwarding_keys(versions: Sequence[int]) -> list[str]:
    """The sysctl keys that let the kernel forward the IP versions in ``versions`` (4, 6)."""
    return [key for v, key in ((4, IPV4_FORWARD), (6, IPV6_FORWARD)) if v in versions]


def read_forwarding(key: str) -> list[str]:
    """``sysctl -n KEY``: prints ``0`` or ``1``."""
    return ["sysctl", "-n", key]


def set_forwarding(key: str, on: bool) -> list[str]:
    """``sysctl -q KEY=1`` (or ``=0``)."""
    return set_value(key, "1" if on else "0")


def _check(name: str) -> str:
    if not _IFNAME.match(name):
        raise ValueError(f"{name!r} is not an interface name")
    return name


def nat_script(interface: str, out_interfaces: Sequence[str] = ()) -> str:
    """The ``nft -f`` script that makes ``inet wgpy-nat`` anew: masquerade what came in on
    ``interface`` (the mesh's) and leaves by another interface, or only by one of
    ``out_interfaces`` when given. ValueError for a name that is not an interface's."""
    mesh = _check(interface)
    if out_interfaces:
        names = ", ".join(f'"{_check(n)}"' for n in out_interfaces)
        out = f"oifname {{ {names} }}"
    else:
        out = f'oifname != "{mesh}"'
    return (
        nat_delete_script()
        + f"add table inet {NAT_TABLE}\n"
        + f"add chain inet {NAT_TABLE} postrouting"
        + " { type nat hook postrouting priority 100; policy accept; }\n"
        + f'add rule inet {NAT_TABLE} postrouting iifname "{mesh}" {out} masquerade\n'
    )


def nat_delete_script() -> str:
    """The ``nft -f`` script that deletes ``inet wgpy-nat``: adding it first makes the delete
    succeed when it is not there."""
    return f"add table inet {NAT_TABLE}\ndelete table inet {NAT_TABLE}\n"


Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def filter_script(
    interface: str, grants: Sequence[tuple[Sequence[Address], Sequence[Network]]]
) -> str:
    """The ``nft -f`` script that makes ``inet wgpy-filter`` anew: of the packets that came
    in on ``interface`` (the mesh's) to be forwarded, accept those from each grant's source
    addresses (a peer's overlay addresses) to its prefixes (the routes it may use here), of
    the same family, and drop every other one (counted). Packets to this node itself and
    packets from elsewhere are not looked at. ValueError for a bad interface name."""
    mesh = _check(interface)
    lines = [
        filter_delete_script(),
        f"add table inet {FILTER_TABLE}\n",
        f"add chain inet {FILTER_TABLE} forward"
        " { type filter hook forward priority 0; policy accept; }\n",
    ]
    for sources, prefixes in grants:
        for version, word in ((4, "ip"), (6, "ip6")):
            src = sorted(str(a) for a in sources if a.version == version)
            nets = [n for n in prefixes if n.version == version]
            dst = [str(n) for n in ipaddress.collapse_addresses(nets)]  # type: ignore[type-var]
            if src and dst:
                lines.append(
                    f'add rule inet {FILTER_TABLE} forward iifname "{mesh}" '
                    f"{word} saddr {{ {', '.join(src)} }} {word} daddr {{ {', '.join(dst)} }} "
                    "accept\n"
                )
    lines.append(f'add rule inet {FILTER_TABLE} forward iifname "{mesh}" counter drop\n')
    return "".join(lines)


def filter_delete_script() -> str:
    """The ``nft -f`` script that deletes ``inet wgpy-filter``, there or not."""
    return f"add table inet {FILTER_TABLE}\ndelete table inet {FILTER_TABLE}\n"
