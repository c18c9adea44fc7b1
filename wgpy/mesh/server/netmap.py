"""Who sees whom: the in-memory index of nodes, full maps, and the deltas a change causes.

Pure (no I/O, no clock: ``now`` is an argument). Node V's map holds every other node P that V
may reach or that may reach V, unless either has expired; the entry says which
(``can_reach`` = V may start traffic to P, ``reachable_from`` = P may start traffic to V). An
expired node sees no peers and is no one's peer.

Each :class:`Entry` keeps the node's policy masks (policy.Policy.masks), so a relation costs
two ANDs. A batch of changes (some nodes, maybe the policy) costs, per open stream, O(changed
nodes) plus O(classes) when the policy changed: nodes whose masks and expiry are the same
before and after form one class, and a class is only walked when its relation to the viewer
changed. Only a viewer whose own masks or expiry changed is compared against every node.

Routes (subnet routers, exit nodes): the index also holds every node's routes (routes.Route,
as store/routes.py gives them) and what each router offers (route_access.offered). A router's
PEER then depends on the viewer too: ``routes`` holds the prefixes the viewer may use through
it (route_access.routes_for), also appended to ``addresses`` (its allowed IPs), and
``exit_node`` says the viewer may use it as its exit node (the default routes themselves are
never in ``addresses``: the node that chooses an exit node adds them). A PEER without routes,
the common case, is cached per relation as before; one with routes per relation and granted
prefixes. A batch whose routes or policy changed sends each viewer the routers whose grant to
it changed: O(viewers x routers) then, nothing more when no node routes anything. The self
NODE carries the node's ``advertised_routes`` and ``approved_routes``.

The other direction, for the router's packet filter: in a router's own map each PEER carries
``routed_for``, the router's offered prefixes that peer may use through it (the same
route_access.routes_for, with the peer as the viewer). Only a viewer that offers routes has
it; such a viewer's PEERs are cached per relation, grant and ``routed_for``. When the
router's side moves (the policy, its offers, its own user or tags) its stream compares every
node (O(nodes) for each router viewer, by node rather than by class; each node's answer comes
from its masks, route_access.usable, a few ANDs); a changed peer is compared as usual.
Viewers that route nothing cost what they did.
"""

from __future__ import annotations

import contextlib
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from wgpy.dns.names import DEFAULT_BASE_DOMAIN, node_name

from .models import Node
from .policy import DEFAULT, Policy
from .route_access import UseTable, offered, routes_for, usable, use_table
from .routes import EXIT_ROUTES, Prefix, Route, sort_prefixes

Line = bytes  # one NDJSON message, newline included
Relation = tuple[bool, bool]  # (can_reach, reachable_from), from the viewer's side
Masks = Mapping[int, tuple[int, int]]  # node id -> (src mask, dst mask), policy.Policy.masks
Offers = Mapping[int, tuple[Prefix, ...]]  # router id -> offered prefixes (route_access.offered)
Granted = tuple[Prefix, ...]  # what one viewer may use through one router
Grants = tuple[Granted, Granted]  # before and after a batch


@dataclass(frozen=True, slots=True)
class Entry:
    node: Node
    src: int
    dst: int
    expired: bool

    def same_relations(self, other: Entry) -> bool:
        return (self.src, self.dst, self.expired) == (other.src, other.dst, other.expired)


def relation(viewer: Entry | None, peer: Entry | None) -> Relation | None:
    """How ``viewer`` and ``peer`` relate, or None if ``peer`` is not in the viewer's map."""
    if viewer is None or peer is None or viewer.expired or peer.expired:
        return None
    can_reach = (viewer.src & peer.dst) != 0
    reachable_from = (peer.src & viewer.dst) != 0
    return (can_reach, reachable_from) if can_reach or reachable_from else None


def encode(message: dict[str, Any]) -> Line:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def named(data: dict[str, Any], node: Node, base_domain: str) -> dict[str, Any]:
    """``data`` (a node's NODE or PEER) with the node's DNS ``name`` (HOST.USER.BASE,
    wgpy/dns/names.py), or without one when its host or user name has no usable characters."""
    with contextlib.suppress(ValueError):
        data["name"] = node_name(node.hostname, node.user, base_domain)
    return data


def self_json(
    node: Node,
    now: float,
    base_domain: str = DEFAULT_BASE_DOMAIN,
    routes: Iterable[Route] = (),
) -> dict[str, Any]:
    """NODE as the node's own map shows it: named, online, with the prefixes it advertises
    and those approved (``wgpy status`` shows what awaits approval)."""
    data = named(node.to_json(now, online=True), node, base_domain)
    advertised, approved = _own(routes)
    data["advertised_routes"] = list(advertised)
    data["approved_routes"] = list(approved)
    return data


def self_line(
    node: Node, now: float, base_domain: str = DEFAULT_BASE_DOMAIN, routes: Iterable[Route] = ()
) -> Line:
    return encode({"type": "self", "self": self_json(node, now, base_domain, routes)})


def granted_json(data: dict[str, Any], granted: Granted) -> dict[str, Any]:
    """``data`` (a PEER) with what the viewer may use through the node: ``routes`` (also in
    ``addresses``) and ``exit_node`` (the default routes, which are not)."""
    routes = [str(p) for p in granted if p not in EXIT_ROUTES]
    if routes:
        data["routes"] = routes
        data["addresses"] = [*data["addresses"], *routes]
    if len(routes) != len(granted):
        data["exit_node"] = True
    return data


def routed_for_json(data: dict[str, Any], routed: Granted) -> dict[str, Any]:
    """``data`` (a PEER in a router's map) with ``routed_for``: the router's own prefixes
    (default routes too) that the peer may use through it, for the router's packet filter."""
    if routed:
        data["routed_for"] = [str(p) for p in routed]
    return data


@dataclass
class Batch:
    """What :meth:`NetIndex.apply` changed: the entries before, and which ids moved."""

    old: dict[int, Entry]
    changed: set[int]
    policy_changed: bool
    old_policy: Policy = DEFAULT
    old_offers: Offers | None = None  # None: the routes did not change
    own_routes: frozenset[int] = frozenset()  # nodes whose own routes (self NODE) changed


class NetIndex:
    def __init__(
        self,
        policy: Policy = DEFAULT,
        policy_version: int = 0,
        *,
        base_domain: str = DEFAULT_BASE_DOMAIN,
    ) -> None:
        self.policy = policy
        self.base_domain = base_domain  # names in the map: HOST.USER.BASE
        self.policy_version = policy_version
        self.entries: dict[int, Entry] = {}
        # PEER as JSON, per node and relation: every viewer with that relation shares it.
        self._peer_json: dict[tuple[int, Relation], bytes] = {}
        # Routes: each node's (for its self NODE) and what each router offers.
        self.routes: dict[int, tuple[Route, ...]] = {}
        self.offers: dict[int, tuple[Prefix, ...]] = {}
        # A PEER with routes in it, per relation, what the viewer is granted through the
        # peer and what the peer may use through the viewer (``routed_for``).
        self._routed_json: dict[int, dict[tuple[Relation, Granted, Granted], bytes]] = {}
        # Per router: what it takes to use each of its prefixes (route_access.use_table).
        self._use_tables: dict[int, UseTable] = {}

    def entry(self, node: Node, now: float, masks: Masks | None = None) -> Entry:
        known = None if masks is None else masks.get(node.id)
        src, dst = self.policy.masks(node) if known is None else known
        return Entry(node, src, dst, node.expired(now))

    def apply(
        self,
        nodes: Iterable[Node],
        *,
        removed: Iterable[int] = (),
        policy: tuple[Policy, int] | None = None,
        now: float,
        replace_all: bool = False,
        masks: Masks | None = None,
        routes: Iterable[Route] | None = None,
    ) -> Batch:
        """Put ``nodes`` in (replacing the same ids), take ``removed`` out (with
        ``replace_all``, everything not in ``nodes``), maybe switch to a new policy.
        ``masks``: the nodes' masks under the (new) policy, if the caller worked them out
        already (hub.py does, a slice at a time). ``routes``: every node's routes now (None:
        as they were)."""
        old = dict(self.entries)
        nodes = list(nodes)
        old_policy = self.policy
        old_offers: Offers | None = None
        own_routes: frozenset[int] = frozenset()
        if routes is not None:
            by_node: dict[int, list[Route]] = {}
            for route in routes:
                by_node.setdefault(route.node_id, []).append(route)
            new_routes = {i: tuple(rs) for i, rs in by_node.items()}
            own_routes = frozenset(
                i
                for i in set(new_routes) | set(self.routes)
                if _own(new_routes.get(i, ())) != _own(self.routes.get(i, ()))
            )
            new_offers = offered(r for rs in new_routes.values() for r in rs)
            if new_offers != self.offers:
                old_offers = self.offers
            self.routes, self.offers = new_routes, new_offers
        policy_changed = policy is not None and policy[1] != self.policy_version
        if policy is not None:
            self.policy, self.policy_version = policy
        if policy_changed:
            self.entries = {i: self.entry(e.node, now, masks) for i, e in self.entries.items()}
        changed: set[int] = set()
        for node in nodes:
            entry = self.entry(node, now, masks)
            if self.entries.get(node.id) != entry:
                changed.add(node.id)
            self.entries[node.id] = entry
        gone = set(self.entries) - {n.id for n in nodes} if replace_all else set(removed)
        for node_id in gone:
            if self.entries.pop(node_id, None) is not None:
                changed.add(node_id)
        for node_id in changed:
            for rel in _RELATIONS:
                self._peer_json.pop((node_id, rel), None)
            self._routed_json.pop(node_id, None)
        if old_offers is not None or policy_changed:
            self._routed_json.clear()  # keyed by what it says, but grants that moved are stale
            self._use_tables = {}
        return Batch(old, changed, policy_changed, old_policy, old_offers, own_routes)

    def granted(self, viewer: Node, router: Node) -> Granted:
        """What ``viewer`` may use through ``router`` (nothing for a node that routes none)."""
        return _granted(self.policy, self.offers, viewer, router)

    def routed_for(self, peer: Entry, viewer: Entry) -> Granted:
        """What ``peer`` may use through ``viewer`` (nothing when the viewer routes none)."""
        return _routed(self.policy, self.offers, self._use_tables, peer, viewer)

    def peer_json(
        self, peer: Node, rel: Relation, granted: Granted = (), routed: Granted = ()
    ) -> bytes:
        """PEER as a viewer sees it: ``granted``, what the viewer may use through the peer;
        ``routed``, what the peer may use through the viewer."""
        if granted or routed:
            per_node = self._routed_json.setdefault(peer.id, {})
            cached = per_node.get((rel, granted, routed))
            if cached is None:
                data = granted_json(named(peer.peer_json(*rel), peer, self.base_domain), granted)
                cached = json.dumps(routed_for_json(data, routed), separators=(",", ":")).encode()
                per_node[(rel, granted, routed)] = cached
            return cached
        key = (peer.id, rel)
        cached = self._peer_json.get(key)
        if cached is None:
            data = named(peer.peer_json(*rel), peer, self.base_domain)
            cached = json.dumps(data, separators=(",", ":")).encode()
            self._peer_json[key] = cached
        return cached

    def self_line(self, node: Node, now: float) -> Line:
        return self_line(node, now, self.base_domain, self.routes.get(node.id, ()))

    def full(self, viewer_id: int, now: float) -> Line:
        """The ``full`` message for a viewer."""
        viewer = self.entries[viewer_id]
        offers = self.offers
        router = viewer_id in offers
        peers = [
            self.peer_json(
                peer.node,
                rel,
                self.granted(viewer.node, peer.node) if peer.node.id in offers else (),
                self.routed_for(peer, viewer) if router else (),
            )
            for peer in self.entries.values()
            if peer.node.id != viewer_id and (rel := relation(viewer, peer)) is not None
        ]
        head = encode(
            {
                "type": "full",
                "version": self.policy_version,
                "self": self_json(
                    viewer.node, now, self.base_domain, self.routes.get(viewer_id, ())
                ),
                "peers": [],
            }
        )
        return head[: -len(b"[]}\n")] + b"[" + b",".join(peers) + b"]}\n"

    def next_expiry(self, now: float) -> float | None:
        """When the next node that has not expired yet will."""
        times = [
            e.node.expires_at
            for e in self.entries.values()
            if e.node.expires_at is not None and not e.expired
        ]
        return min(times) if times else None

    def due_to_expire(self, now: float) -> list[int]:
        return [i for i, e in self.entries.items() if not e.expired and e.node.expired(now)]

    def deltas(self, batch: Batch, viewers: Iterable[int], now: float) -> dict[int, list[Line]]:
        """The lines each of ``viewers`` (ids with an open stream) needs after ``batch``."""
        old, new, changed = batch.old, self.entries, batch.changed
        view_changed = {i: _view_change(old.get(i), new.get(i)) for i in changed}
        old_offers = self.offers if batch.old_offers is None else batch.old_offers
        lines = _Lines(self, batch.old_policy, old_offers)
        routers = set(old_offers) | set(self.offers)
        # Routers whose grant to any viewer may have changed (besides changed nodes).
        if batch.policy_changed:
            route_check = routers
        else:
            route_check = {i for i in routers if old_offers.get(i) != self.offers.get(i)}
        route_check_changed = route_check | (changed & routers)
        # Routers are walked one by one, never by class: their PEER depends on the viewer.
        classes = _classes(old, new, changed | routers) if batch.policy_changed else []
        everyone = set(old) | set(new)
        out: dict[int, list[Line]] = {}
        for v in viewers:
            ov, nv = old.get(v), new.get(v)
            if nv is None:
                continue  # deleted: the hub ends its stream
            if not routers:  # the common case: no node routes anything
                check = route_check
            elif v in changed:
                check = route_check | routers
            else:
                check = route_check_changed
            # A router viewer: what each peer may use through it (``routed_for``) may have
            # moved for every peer when the policy, its offers or what the policy knows of it
            # (its user, under the default policy) did.
            router = v in routers
            reverse = router and (
                batch.policy_changed
                or old_offers.get(v) != self.offers.get(v)
                or (v in changed and _identity(ov) != _identity(nv))
            )

            # The node itself first, then removals, then upserts (a public key may move from
            # a deleted node to a new one in one batch).
            head: list[Line] = []
            removes: list[Line] = []
            messages: list[Line] = []
            if (
                v in changed
                and (
                    ov is None
                    or ov.node.self_view() != nv.node.self_view()
                    or ov.expired != nv.expired
                )
            ) or v in batch.own_routes:
                head.append(self.self_line(nv.node, now))
            if reverse or (not batch.policy_changed and (ov is None or not ov.same_relations(nv))):
                # The viewer's own relations (or routed_for) moved: compare it with every node.
                for p in everyone:
                    if p != v:
                        changed_view = view_changed[p] if p in changed else _SAME
                        op, np = old.get(p), new.get(p)
                        lines.pair(
                            messages,
                            removes,
                            ov,
                            nv,
                            op,
                            np,
                            changed_view,
                            lines.grants(check, ov, nv, p, op, np) if routers else _NONE,
                            lines.routed(True, ov, nv, p, op, np) if reverse else _NONE,
                        )
            else:
                for p in changed | check if check else changed:
                    if p != v:
                        op, np = old.get(p), new.get(p)
                        lines.pair(
                            messages,
                            removes,
                            ov,
                            nv,
                            op,
                            np,
                            view_changed.get(p, _SAME),
                            lines.grants(check, ov, nv, p, op, np) if routers else _NONE,
                            lines.routed(p in changed, ov, nv, p, op, np) if router else _NONE,
                        )
                # The policy changed: unchanged nodes by class (every node is in one).
                for (old_rep, new_rep), members in classes:
                    after = relation(nv, new_rep)
                    if relation(ov, old_rep) != after:
                        lines.group(removes if after is None else messages, v, members, after)
            if head or removes or messages:
                out[v] = head + removes + messages
        return out


def _own(routes: Iterable[Route]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What a node's self NODE shows of its routes: advertised, approved."""
    routes = list(routes)
    return (
        tuple(str(p) for p in sort_prefixes(r.prefix for r in routes if r.advertised)),
        tuple(str(p) for p in sort_prefixes(r.prefix for r in routes if r.approved)),
    )


def _identity(entry: Entry | None) -> tuple[object, ...] | None:
    """What the policy may know of a node (policy.Subject), for telling whether a router's
    grants to its peers may have moved with the router itself."""
    if entry is None:
        return None
    n = entry.node
    return (n.user, n.hostname, n.tags, n.ip_addresses)


def _granted(policy: Policy, offers: Offers, viewer: Node, router: Node) -> Granted:
    if router.id not in offers:
        return ()
    return routes_for(policy, viewer, [router], offers).get(router.id, ())


def _routed(
    policy: Policy, offers: Offers, tables: dict[int, UseTable], peer: Entry, router: Entry
) -> Granted:
    """What ``peer`` may use through ``router`` (``routed_for``), from the peer's masks:
    route_access.usable, with each router's use_table made once in ``tables``."""
    offer = offers.get(router.node.id)
    if offer is None:
        return ()
    table = tables.get(router.node.id)
    if table is None:
        table = tables[router.node.id] = use_table(policy, offer)
    return usable(policy, router.node, table, peer.node, (peer.src, peer.dst))


_NONE: Grants = ((), ())
_RELATIONS: tuple[Relation, ...] = ((True, True), (True, False), (False, True))

# How a peer's PEER changed: not at all, only its online state (a short ``peer_online`` line
# says so: when a whole mesh reconnects, every node's coming online reaches every other
# node, and N^2 short lines cost a fraction of N^2 whole PEERs), or otherwise.
_SAME, _ONLINE, _OTHER = 0, 1, 2


def _view_change(old: Entry | None, new: Entry | None) -> int:
    if old is None or new is None:
        return _OTHER
    before, after = old.node.peer_view(), new.node.peer_view()
    if before == after:
        return _SAME
    return _ONLINE if before[:-1] == after[:-1] else _OTHER  # online is peer_view's last


class _Lines:
    """The delta lines of one batch, each encoded once however many viewers get it."""

    def __init__(self, index: NetIndex, old_policy: Policy, old_offers: Offers) -> None:
        self.index = index
        self.old_policy = old_policy
        self.old_offers = old_offers
        self._upserts: dict[tuple[int, Relation, Granted, Granted], Line] = {}
        self._old_tables: dict[int, UseTable] = {}  # use_table under the old policy and offers
        self._removes: dict[str, Line] = {}
        self._online: dict[int, Line] = {}

    def upsert(
        self, peer: Node, rel: Relation, granted: Granted = (), routed: Granted = ()
    ) -> Line:
        key = (peer.id, rel, granted, routed)
        line = self._upserts.get(key)
        if line is None:
            body = self.index.peer_json(peer, rel, granted, routed)
            line = b'{"type":"peer_upsert","peer":' + body + b"}\n"
            self._upserts[key] = line
        return line

    def grants(
        self,
        check: set[int],
        ov: Entry | None,
        nv: Entry,
        p: int,
        op: Entry | None,
        np: Entry | None,
    ) -> Grants:
        """What viewer ``nv`` may use through peer ``p``, before and after the batch (only
        worked out before for the routers in ``check``: the others' grants did not move)."""
        index = self.index
        after: Granted = ()
        if np is not None and p in index.offers:
            after = _granted(index.policy, index.offers, nv.node, np.node)
        if p not in check:
            return after, after
        if ov is None or op is None or p not in self.old_offers:
            return (), after
        return _granted(self.old_policy, self.old_offers, ov.node, op.node), after

    def routed(
        self,
        recheck: bool,
        ov: Entry | None,
        nv: Entry,
        p: int,
        op: Entry | None,
        np: Entry | None,
    ) -> Grants:
        """What peer ``p`` may use through viewer ``nv`` (a router: ``routed_for``), before
        and after the batch (worked out before only with ``recheck``: the peer or the
        router's side changed)."""
        index = self.index
        v = nv.node.id
        after: Granted = ()
        if np is not None and v in index.offers:
            after = index.routed_for(np, nv)
        if not recheck:
            return after, after
        if ov is None or op is None or v not in self.old_offers:
            return (), after
        before = _routed(self.old_policy, self.old_offers, self._old_tables, op, ov)
        return before, after

    def online(self, peer: Node) -> Line:
        line = self._online.get(peer.id)
        if line is None:
            line = encode(
                {"type": "peer_online", "public_key": peer.public_key, "online": peer.online}
            )
            self._online[peer.id] = line
        return line

    def remove(self, peer: Node) -> Line:
        line = self._removes.get(peer.public_key)
        if line is None:
            line = encode({"type": "peer_remove", "public_key": peer.public_key})
            self._removes[peer.public_key] = line
        return line

    def pair(
        self,
        out: list[Line],
        removes: list[Line],
        ov: Entry | None,
        nv: Entry,
        op: Entry | None,
        np: Entry | None,
        view_change: int,
        grants: Grants = _NONE,
        routed: Grants = _NONE,
    ) -> None:
        """The line (if any) that moves the viewer's entry for one peer from old to new
        (``grants``: what the viewer may use through the peer, before and after; ``routed``:
        what the peer may use through the viewer)."""
        before = relation(ov, op)
        after = relation(nv, np)
        if after is None or np is None:
            if before is not None and op is not None:
                removes.append(self.remove(op.node))
            return
        if before is not None and op is not None:
            if op.node.public_key != np.node.public_key:
                removes.append(self.remove(op.node))
            elif before == after and grants[0] == grants[1] and routed[0] == routed[1]:
                if view_change == _ONLINE:
                    out.append(self.online(np.node))
                if view_change != _OTHER:
                    return
        out.append(self.upsert(np.node, after, grants[1], routed[1]))

    def group(
        self, out: list[Line], viewer: int, members: list[int], after: Relation | None
    ) -> None:
        """A class of unchanged peers whose relation to the viewer changed (to ``after``)."""
        entries = self.index.entries
        if after is None:
            out.extend(self.remove(entries[p].node) for p in members if p != viewer)
        else:
            out.extend(self.upsert(entries[p].node, after) for p in members if p != viewer)


def _classes(
    old: Mapping[int, Entry], new: Mapping[int, Entry], changed: set[int]
) -> list[tuple[tuple[Entry, Entry], list[int]]]:
    """Unchanged nodes grouped by (masks and expiry before, after): one representative pair
    and the members of each group."""
    groups: dict[tuple[int, int, bool, int, int, bool], list[int]] = defaultdict(list)
    for i, n in new.items():
        o = old.get(i)
        if o is None or i in changed:
            continue
        groups[(o.src, o.dst, o.expired, n.src, n.dst, n.expired)].append(i)
    return [((old[ids[0]], new[ids[0]]), ids) for ids in groups.values()]
