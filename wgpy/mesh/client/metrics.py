"""A mesh node's Prometheus metrics, read from counters that already exist at scrape time.

:class:`NodeMetrics` holds a registry with one collector over a running
:class:`~wgpy.mesh.client.node.MeshNode`: per peer, the device's byte counters, latest
handshake and persistent keepalive (wgpy/protocol/peer.py), and the path ICE chose (direct,
relay or none, with its round-trip time; wgpy/nat/paths.py); for the node, the device's drops
by reason (wgpy/protocol/device.py), the STUN demultiplexer's and the ICE checks' drops
(traversal.py, as ``nat.json`` has them), the relay link's, the keepalive kept under the NAT's
mapping lifetime, and whether the map stream is up; the resolver's queries and drops
(nameservice.py). Nothing is counted on the packet path: a
scrape reads the numbers the node keeps anyway. wgpy/metrics.py serves the registry.

Imports: the node's modules by type only; nothing imports this one but the daemon.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ...keys import key_to_base64

if TYPE_CHECKING:
    from .nameservice import NameService
    from .node import MeshNode

__all__ = ["PATH_KINDS", "NodeMetrics"]

PATH_KINDS = ("direct", "relay", "none")  # wgpy/nat/paths.py PathKind
PEER_LABELS = ["peer", "name"]  # the peer's public key (base64) and its hostname in the map


class NodeMetrics:
    def __init__(self, node: MeshNode) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_NodeCollector(node))


class _NodeCollector(Collector):
    def __init__(self, node: MeshNode) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        node = self.node
        yield GaugeMetricFamily(
            "wgpy_node_connected",
            "1 while the map stream from the coordination server is up, else 0.",
            value=1 if node.connected else 0,
        )
        yield GaugeMetricFamily(
            "wgpy_node_peers", "Peers in this node's map.", value=len(node.peers)
        )
        yield from self._peers()
        yield from self._drops()
        traversal = node.traversal
        if traversal is not None and traversal.keepalive:
            yield GaugeMetricFamily(
                "wgpy_node_nat_keepalive_seconds",
                "Seconds between keepalives kept under the NAT's mapping lifetime (ICE "
                "checks on a path, WireGuard's keepalive for peers without ICE).",
                value=traversal.keepalive,
            )

    def _peers(self) -> Iterator[Metric]:
        node = self.node
        received = CounterMetricFamily(
            "wgpy_node_peer_received_bytes", "Bytes received from the peer.", labels=PEER_LABELS
        )
        sent = CounterMetricFamily(
            "wgpy_node_peer_sent_bytes", "Bytes sent to the peer.", labels=PEER_LABELS
        )
        handshake = GaugeMetricFamily(
            "wgpy_node_peer_last_handshake_timestamp_seconds",
            "When the latest handshake with the peer completed (Unix time; 0: never).",
            labels=PEER_LABELS,
        )
        keepalives = CounterMetricFamily(
            "wgpy_node_peer_keepalives_sent",
            "Keepalives (empty packets) WireGuard's timers sent to the peer.",
            labels=PEER_LABELS,
        )
        keepalive = GaugeMetricFamily(
            "wgpy_node_peer_persistent_keepalive_seconds",
            "The peer's persistent keepalive interval (0: off).",
            labels=PEER_LABELS,
        )
        path = GaugeMetricFamily(
            "wgpy_node_peer_path",
            "The peer's path: 1 for its kind (direct, relay, or none: no ICE path, the map's "
            "endpoint and roaming), 0 for the others.",
            labels=[*PEER_LABELS, "kind"],
        )
        rtt = GaugeMetricFamily(
            "wgpy_node_peer_path_rtt_seconds",
            "Round-trip time of the latest ICE check on the peer's path.",
            labels=PEER_LABELS,
        )
        device = node.iface.device if node.iface is not None else None
        paths = node.traversal.paths if node.traversal is not None else None
        for key, peer in list(device.peers.items()) if device is not None else []:
            record = node.peers.get(key)
            labels = [key_to_base64(key), record.hostname if record is not None else ""]
            received.add_metric(labels, peer.rx_bytes)
            sent.add_metric(labels, peer.tx_bytes)
            handshake.add_metric(labels, peer.last_handshake_ns / 1e9)
            keepalive.add_metric(labels, peer.persistent_keepalive)
            keepalives.add_metric(labels, peer.keepalives_sent)
            state = paths.path(key) if paths is not None else None
            kind = state.kind if state is not None else "none"
            for each in PATH_KINDS:
                path.add_metric([*labels, each], 1 if each == kind else 0)
            if state is not None and state.rtt is not None:
                rtt.add_metric(labels, state.rtt)
        yield from (received, sent, handshake, keepalives, keepalive, path, rtt)

    def _drops(self) -> Iterator[Metric]:
        node = self.node
        drops = CounterMetricFamily(
            "wgpy_node_drops",
            "Datagrams and packets dropped, by layer (wireguard: the device; stun: the STUN "
            "demultiplexer on the WireGuard port; ice: ICE checks refused; relay: the TURN "
            "link; dns: queries the node's resolver dropped) and reason.",
            labels=["layer", "reason"],
        )
        if node.iface is not None:
            device_drops = node.iface.device.drops
            for drop, count in sorted(device_drops.items(), key=lambda i: i[0].value):
                drops.add_metric(["wireguard", drop.value], count)
        traversal = node.traversal
        if traversal is not None:
            sources = [
                ("stun", traversal.mux.drops if traversal.mux is not None else {}),
                ("ice", traversal.paths.drops if traversal.paths is not None else {}),
            ]
            relays = traversal.relays
            link = relays.link if relays is not None else None
            sources.append(("relay", link.drops if link is not None else {}))
            for layer, counts in sources:
                for reason, count in sorted(counts.items()):
                    drops.add_metric([layer, reason], count)
        names = node.names
        if names is not None:
            for dns_drop, count in sorted(names.resolver.drops.items()):
                drops.add_metric(["dns", dns_drop.value], count)
        yield drops
        if names is not None:
            yield from self._dns(names)

    def _dns(self, names: NameService) -> Iterator[Metric]:
        resolver = names.resolver
        queries = CounterMetricFamily(
            "wgpy_node_dns_queries",
            "Queries the node's resolver answered itself (mesh names, NXDOMAIN, errors) or "
            "forwarded upstream.",
            labels=["outcome"],
        )
        queries.add_metric(["answered"], resolver.answered)
        queries.add_metric(["forwarded"], resolver.forwarded)
        yield queries
        yield CounterMetricFamily(
            "wgpy_node_dns_upstream_failures",
            "Forwarded queries an upstream did not answer in time, or answered with a "
            "message that was not the answer.",
            value=sum(server.upstream_failures for server in names.servers),
        )
        yield GaugeMetricFamily(
            "wgpy_node_dns_names",
            "Names the node's resolver answers.",
            value=len(resolver.table.names),
        )
