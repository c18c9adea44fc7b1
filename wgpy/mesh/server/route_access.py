"""Which routed prefixes a node's map gives it, behind which router. Pure: no I/O, no clock.

What a router offers (:func:`offered`): each prefix it is the primary router of, and, if it is
an approved exit node, both default routes (every approved exit node offers them: the node
chooses one). What a viewer gets of it (:func:`routes_for`): the prefixes the policy lets the
viewer reach or be reached from, the policy's CIDR selectors applying to the prefixes as they
apply to node addresses:

- a rule whose ``src`` matches the viewer and whose ``dst`` has ``*`` or a prefix overlapping
  the route lets the viewer reach (some of) the route; the route goes in the router's allowed
  IPs whole, the node's packet filter narrows it (as Tailscale does);
- a rule whose ``src`` has ``*`` or a prefix overlapping the route and whose ``dst`` matches
  the viewer lets hosts behind the router start traffic to the viewer (replies come back
  through the router with their own source addresses);
- a default route (an exit node) only through ``*`` or that very prefix (``0.0.0.0/0``,
  ``::/0``): a rule that reaches one LAN does not make the viewer a user of the internet;
- with no policy set (the default: nodes of one user reach each other), a viewer gets the
  routes of its own user's routers.

The same answer from the other side, for a router's map of every peer (:func:`use_table` once
per router, then :func:`usable` per peer, from the peer's policy masks: two ANDs a prefix).

A node never gets its own routes. Node selectors (``user:``, ``tag:``, ``group:``, ``node:``)
in ``dst`` mean nodes, not the networks behind them: reaching a router does not by itself let
a node reach its subnets.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from .policy import AnyNode, Policy, PrefixSelector, Selector, Subject
from .routes import EXIT_ROUTES, Prefix, Route, is_exit, sort_prefixes

__all__ = ["UseTable", "offered", "routes_for", "usable", "use_table"]

# Per offered prefix: the rules whose dst covers it, the rules whose src covers it (bit sets)
UseTable = tuple[tuple[Prefix, int, int], ...]


def offered(routes: Iterable[Route]) -> dict[int, tuple[Prefix, ...]]:
    """Each router's offered prefixes (node id -> prefixes, sorted): its primary routes and,
    for an exit node (both default routes served), the default routes."""
    served: dict[int, set[Prefix]] = {}
    primary: dict[int, set[Prefix]] = {}
    for route in routes:
        if route.served:
            served.setdefault(route.node_id, set()).add(route.prefix)
            if route.primary:
                primary.setdefault(route.node_id, set()).add(route.prefix)
    out = {}
    for node_id, prefixes in served.items():
        mine = set(primary.get(node_id, ()))
        if is_exit(prefixes):
            mine |= EXIT_ROUTES
        if mine:
            out[node_id] = sort_prefixes(mine)
    return out


def routes_for(
    policy: Policy,
    viewer: Subject,
    routers: Iterable[Subject],
    offers: Mapping[int, Sequence[Prefix]],
) -> dict[int, tuple[Prefix, ...]]:
    """The prefixes ``viewer`` gets in each router's allowed IPs (router id -> prefixes; a
    router with none is left out). ``routers``: the routers' nodes; ``offers``: what
    :func:`offered` gave."""
    out = {}
    for router in routers:
        if router.id == viewer.id:
            continue
        prefixes = tuple(
            p for p in offers.get(router.id, ()) if _may_use(policy, viewer, router, p)
        )
        if prefixes:
            out[router.id] = prefixes
    return out


def use_table(policy: Policy, prefixes: Sequence[Prefix]) -> UseTable:
    """What it takes to use each of a router's ``prefixes``: the rules whose ``dst`` covers it
    (a node their ``src`` matches may use it) and those whose ``src`` covers it (a node their
    ``dst`` matches), as bit sets numbered as policy.Policy.masks numbers the rules."""
    out = []
    for prefix in prefixes:
        via_dst = via_src = 0
        if not policy.is_default:
            for i, rule in enumerate(policy.rules):
                if _covers(rule.dst, prefix):
                    via_dst |= 1 << i
                if _covers(rule.src, prefix):
                    via_src |= 1 << i
        out.append((prefix, via_dst, via_src))
    return tuple(out)


def usable(
    policy: Policy, router: Subject, table: UseTable, viewer: Subject, masks: tuple[int, int]
) -> tuple[Prefix, ...]:
    """What ``viewer`` (its masks under ``policy``: policy.Policy.masks) may use of what
    ``router`` offers (``table``: :func:`use_table` of the same policy): as
    ``routes_for(policy, viewer, [router], offers)``, without a test per selector."""
    if viewer.id == router.id:
        return ()
    if policy.is_default:
        return tuple(p for p, _, _ in table) if viewer.user == router.user else ()
    src, dst = masks
    return tuple(p for p, via_dst, via_src in table if src & via_dst or dst & via_src)


def _may_use(policy: Policy, viewer: Subject, router: Subject, prefix: Prefix) -> bool:
    if policy.is_default:
        return viewer.user == router.user
    for rule in policy.rules:
        if _covers(rule.dst, prefix) and any(s.matches(viewer) for s in rule.src):
            return True
        if _covers(rule.src, prefix) and any(s.matches(viewer) for s in rule.dst):
            return True
    return False


def _covers(selectors: Sequence[Selector], prefix: Prefix) -> bool:
    exit_route = prefix in EXIT_ROUTES
    for sel in selectors:
        if isinstance(sel, AnyNode):
            return True
        if not isinstance(sel, PrefixSelector) or sel.network.version != prefix.version:
            continue
        if sel.network == prefix if exit_route else sel.network.overlaps(prefix):
            return True
    return False
