"""A mesh node's metrics (wgpy/mesh/client/metrics.py), served by wgpy/metrics.py: two nodes
on fake interfaces (a real Device, no TUN) against a real server on loopback; the node's
registry scraped over HTTP and parsed with prometheus-client's text parser."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from wgpy import metrics
from wgpy.endpoint import Endpoint
from wgpy.keys import key_to_base64
from wgpy.mesh.client.metrics import NodeMetrics

from .conftest import ServerConfig, running
from .fakes import until
from .test_client_real_server import Node


async def scrape(session: aiohttp.ClientSession, url: str) -> list[Sample]:
    async with session.get(url) as response:
        assert response.status == 200
        text = await response.text()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def one(samples: list[Sample], metric: str, /, **labels: str) -> float:
    found = [s.value for s in samples if s.name == metric and labels.items() <= s.labels.items()]
    assert len(found) == 1, f"{metric} {labels}: {found}"
    return found[0]


async def test_serve_answers_metrics_only() -> None:
    registry = CollectorRegistry()
    Counter("wgpy_test_things", "Things.", registry=registry).inc(3)
    runner = await metrics.serve(registry, "127.0.0.1", 0)
    try:
        url = metrics.url_of(runner)
        assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
        async with aiohttp.ClientSession() as session:
            assert one(await scrape(session, url), "wgpy_test_things_total") == 3
            async with session.get(url.replace("/metrics", "/other")) as response:
                assert response.status == 404
    finally:
        await runner.cleanup()


async def test_a_node_exposes_its_peers_path_and_drops(
    config: ServerConfig, tmp_path: Path
) -> None:
    async with running(config) as r:
        await r.admin.user("alice")
        auth = await r.admin.auth_key("alice", reusable=True)
        a = Node(r.url, tmp_path, "laptop", auth)
        b = Node(r.url, tmp_path, "phone", auth)
        node_a = await a.start()
        await b.start()
        runner = await metrics.serve(NodeMetrics(node_a).registry, "127.0.0.1", 0)
        try:
            await until(lambda: b.public in node_a.device.peers, 3.0, "laptop sees phone")
            peer = node_a.device.peers[b.public]
            peer.rx_bytes, peer.tx_bytes, peer.last_handshake_ns = 1234, 5678, 1_700_000_000 * 10**9
            # two datagrams no peer sent: too short, and an unknown message type
            now = asyncio.get_running_loop().time()
            source = Endpoint("192.0.2.99", 4000)
            node_a.device.receive_datagrams([(b"\x01", source), (b"\x09" + bytes(40), source)], now)

            samples = await scrape(r.session, metrics.url_of(runner))
            assert one(samples, "wgpy_node_connected") == 1
            assert one(samples, "wgpy_node_peers") == 1
            labels = {"peer": key_to_base64(b.public), "name": "phone"}
            assert one(samples, "wgpy_node_peer_received_bytes_total", **labels) == 1234
            assert one(samples, "wgpy_node_peer_sent_bytes_total", **labels) == 5678
            handshake = "wgpy_node_peer_last_handshake_timestamp_seconds"
            assert one(samples, handshake, **labels) == 1_700_000_000
            assert one(samples, "wgpy_node_peer_path", kind="none", **labels) == 1
            assert one(samples, "wgpy_node_peer_path", kind="direct", **labels) == 0
            wireguard = {
                s.labels["reason"]: s.value
                for s in samples
                if s.name == "wgpy_node_drops_total" and s.labels["layer"] == "wireguard"
            }
            assert wireguard == {
                reason.value: count for reason, count in node_a.device.drops.items()
            }
            assert sum(wireguard.values()) == 2
        finally:
            await runner.cleanup()
            await a.stop()
            await b.stop()
