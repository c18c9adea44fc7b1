"""Which peer is this node's exit node (``wgpy up --exit-node NAME|IP``), worked out from the
map without I/O.

The user names the peer by its mesh name (``HOST.USER.BASE``, or a shorter leading part of
it such as ``HOST`` or ``HOST.USER``), its host name, or one of its overlay addresses. The
peer is used only while the map says it is an exit node for this node (``"exit_node": true``:
it advertises the default routes, an admin or the policy approved them, and the policy lets
this node use them); :func:`choose` says which peer that is, or in one sentence why there is
none.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from ...dns.names import check_name
from .netmap import PeerRecord

__all__ = ["ExitChoice", "check_exit_node", "choose"]


@dataclass(frozen=True)
class ExitChoice:
    """The exit peer (None: none now) and, when there is none, why."""

    public_key: bytes | None = None
    name: str = ""  # the peer's name, for the log
    problem: str | None = None  # a sentence; None: chosen, or no exit node asked for


def check_exit_node(text: str) -> str:
    """``--exit-node``'s value, canonical: an IP address or a DNS name (lowercase, without a
    final dot); ``""`` means none. ValueError with a sentence otherwise."""
    text = text.strip()
    if not text:
        return ""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    try:
        return check_name(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a peer's name nor an IP address; give its mesh name "
            "(as `wgpy status` shows it), its host name or its overlay address"
        ) from None


def _names(peer: PeerRecord) -> set[str]:
    """What the user may call ``peer``: its full name, each leading part of it, its host
    name."""
    names = {peer.hostname.lower()} if peer.hostname else set()
    if peer.name:
        labels = peer.name.split(".")
        names |= {".".join(labels[:n]) for n in range(1, len(labels) + 1)}
    return names


def _matches(wanted: str, peer: PeerRecord) -> bool:
    try:
        address = ipaddress.ip_address(wanted)
    except ValueError:
        return wanted in _names(peer)
    return any(
        n.prefixlen == n.max_prefixlen and n.network_address == address for n in peer.allowed_ips
    )


def choose(wanted: str, peers: Mapping[bytes, PeerRecord]) -> ExitChoice:
    """The peer ``wanted`` (a :func:`check_exit_node` value) names among ``peers`` (the map),
    if it is an exit node for this node."""
    if not wanted:
        return ExitChoice()
    found = [peer for peer in peers.values() if _matches(wanted, peer)]
    if not found:
        return ExitChoice(
            problem=f"no peer called {wanted} is in this node's map; give an exit node's mesh "
            "name, host name or overlay address (`wgpy status` lists the peers)"
        )
    if len(found) > 1:
        names = ", ".join(sorted(p.name or p.hostname for p in found))
        return ExitChoice(
            problem=f"{wanted} names more than one peer ({names}); give its full mesh name "
            "or its overlay address"
        )
    peer = found[0]
    name = peer.name or peer.hostname
    if not peer.exit_node:
        return ExitChoice(
            name=name,
            problem=f"the peer {name} is not an exit node for this node: it must run with "
            "--advertise-exit-node, an admin must approve its exit routes (or the policy's "
            "autoApprovers), and the policy must let this node use them",
        )
    return ExitChoice(public_key=peer.public_key, name=name)
