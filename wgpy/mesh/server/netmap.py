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

Line = bytes  # one NDJSON message, newline included
Relation = tuple[bool, bool]  # (can_reach, reachable_from), from the viewer's side
Masks = Mapping[int, tuple[int, int]]  # node id -> (src mask, dst mask), policy.Policy.masks


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


def self_line(node: Node, now: float, base_domain: str = DEFAULT_BASE_DOMAIN) -> Line:
    return encode(
        {"type": "self", "self": named(node.to_json(now, online=True), node, base_domain)}
    )


@dataclass
class Batch:
    """What :meth:`NetIndex.apply` changed: the entries before, and which ids moved."""

    old: dict[int, Entry]
    changed: set[int]
    policy_changed: bool


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
    ) -> Batch:
        """Put ``nodes`` in (replacing the same ids), take ``removed`` out (with
        ``replace_all``, everything not in ``nodes``), maybe switch to a new policy.
        ``masks``: the nodes' masks under the (new) policy, if the caller worked them out
        already (hub.py does, a slice at a time)."""
        old = dict(self.entries)
        nodes = list(nodes)
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
        return Batch(old, changed, policy_changed)

    def peer_json(self, peer: Node, rel: Relation) -> bytes:
        key = (peer.id, rel)
        cached = self._peer_json.get(key)
        if cached is None:
            data = named(peer.peer_json(*rel), peer, self.base_domain)
            cached = json.dumps(data, separators=(",", ":")).encode()
            self._peer_json[key] = cached
        return cached

    def full(self, viewer_id: int, now: float) -> Line:
        """The ``full`` message for a viewer."""
        viewer = self.entries[viewer_id]
        peers = [
            self.peer_json(peer.node, rel)
            for peer in self.entries.values()
            if peer.node.id != viewer_id and (rel := relation(viewer, peer)) is not None
        ]
        head = encode(
            {
                "type": "full",
                "version": self.policy_version,
                "self": named(viewer.node.to_json(now, online=True), viewer.node, self.base_domain),
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
        lines = _Lines(self)
        classes = _classes(old, new, changed) if batch.policy_changed else []
        everyone = set(old) | set(new)
        out: dict[int, list[Line]] = {}
        for v in viewers:
            ov, nv = old.get(v), new.get(v)
            if nv is None:
                continue  # deleted: the hub ends its stream
            # The node itself first, then removals, then upserts (a public key may move from
            # a deleted node to a new one in one batch).
            head: list[Line] = []
            removes: list[Line] = []
            messages: list[Line] = []
            if v in changed and (
                ov is None or ov.node.self_view() != nv.node.self_view() or ov.expired != nv.expired
            ):
                head.append(self_line(nv.node, now, self.base_domain))
            if not batch.policy_changed and (ov is None or not ov.same_relations(nv)):
                # The viewer's own relations moved: compare it with every node.
                for p in everyone:
                    if p != v:
                        changed_view = view_changed[p] if p in changed else _SAME
                        lines.pair(messages, removes, ov, nv, old.get(p), new.get(p), changed_view)
            else:
                for p in changed:
                    if p != v:
                        lines.pair(
                            messages, removes, ov, nv, old.get(p), new.get(p), view_changed[p]
                        )
                # The policy changed: unchanged nodes by class (every node is in one).
                for (old_rep, new_rep), members in classes:
                    after = relation(nv, new_rep)
                    if relation(ov, old_rep) != after:
                        lines.group(removes if after is None else messages, v, members, after)
            if head or removes or messages:
                out[v] = head + removes + messages
        return out


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

    def __init__(self, index: NetIndex) -> None:
        self.index = index
        self._upserts: dict[tuple[int, Relation], Line] = {}
        self._removes: dict[str, Line] = {}
        self._online: dict[int, Line] = {}

    def upsert(self, peer: Node, rel: Relation) -> Line:
        key = (peer.id, rel)
        line = self._upserts.get(key)
        if line is None:
            line = b'{"type":"peer_upsert","peer":' + self.index.peer_json(peer, rel) + b"}\n"
            self._upserts[key] = line
        return line

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
    ) -> None:
        """The line (if any) that moves the viewer's entry for one peer from old to new."""
        before = relation(ov, op)
        after = relation(nv, np)
        if after is None or np is None:
            if before is not None and op is not None:
                removes.append(self.remove(op.node))
            return
        if before is not None and op is not None:
            if op.node.public_key != np.node.public_key:
                removes.append(self.remove(op.node))
            elif before == after:
                if view_change == _ONLINE:
                    out.append(self.online(np.node))
                if view_change != _OTHER:
                    return
        out.append(self.upsert(np.node, after))

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
