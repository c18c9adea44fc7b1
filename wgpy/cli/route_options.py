"""The subnet-route options of ``wgpy up`` (mesh): ``--advertise-routes PREFIX,...`` (an empty
value, ``--advertise-routes=``, withdraws them), ``--snat-subnet-routes[=true|false]`` and
``--accept-routes[=true|false]`` (both on by default, as Tailscale's). Each one given is saved
in the node's settings; one not given keeps the value of the last ``up``."""

from __future__ import annotations

import argparse
import ipaddress

from wgpy.mesh.client.state import Settings

__all__ = ["add_route_arguments", "boolean", "prefixes", "route_settings"]

_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def boolean(text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is neither true nor false")


def prefixes(text: str) -> tuple[str, ...]:
    """``192.168.1.0/24,fd00:1::/64`` as prefixes in network form (sorted, IPv4 first,
    duplicates dropped); the server checks the rest (the mesh's own range, how many)."""
    out: set[ipaddress.IPv4Network | ipaddress.IPv6Network] = set()
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            if "/" not in item:
                length = ipaddress.ip_address(item).max_prefixlen
                raise argparse.ArgumentTypeError(
                    f"{item!r} has no prefix length; write {item}/{length} for the one address"
                )
            network = ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{item!r} is not a prefix; write one such as 192.168.1.0/24 or fd00:1::/64"
            ) from None
        if ipaddress.ip_interface(item).ip != network.network_address:
            raise argparse.ArgumentTypeError(f"{item!r} has host bits set; advertise {network}")
        if network.prefixlen == 0:
            raise argparse.ArgumentTypeError(
                f"{item!r} is a default route; offer this node as an exit node with "
                "--advertise-exit-node instead"
            )
        out.add(network)
    ordered = sorted(out, key=lambda n: (n.version, n.network_address.packed, n.prefixlen))
    return tuple(str(n) for n in ordered)


def add_route_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--advertise-routes",
        metavar="PREFIX,...",
        type=prefixes,
        help="offer to route these subnets for the mesh (an admin approves them: `wgpy admin "
        "routes approve`); turns on IP forwarding; an empty value withdraws them",
    )
    group.add_argument(
        "--snat-subnet-routes",
        metavar="BOOL",
        nargs="?",
        const=True,
        type=boolean,
        help="masquerade what the node forwards from the mesh to its subnets, so hosts there "
        "need no route back (default true; false: they need a route to the mesh's range "
        "through this node)",
    )
    group.add_argument(
        "--accept-routes",
        metavar="BOOL",
        nargs="?",
        const=True,
        type=boolean,
        help="route the subnets other nodes advertise through the mesh (default true; false: "
        "only the peers' own addresses)",
    )


def route_settings(
    args: argparse.Namespace, previous: Settings | None
) -> tuple[tuple[str, ...], bool, bool]:
    """(advertised routes, snat, accept routes): given, else the last up's, else defaults."""
    routes = getattr(args, "advertise_routes", None)
    snat = getattr(args, "snat_subnet_routes", None)
    accept = getattr(args, "accept_routes", None)
    return (
        routes if routes is not None else (previous.advertise_routes if previous else ()),
        snat if snat is not None else (previous.snat_subnet_routes if previous else True),
        accept if accept is not None else (previous.accept_routes if previous else True),
    )
