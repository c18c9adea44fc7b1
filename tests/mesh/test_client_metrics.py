"""A mesh node's metrics (wgpy/mesh/client/metrics.py), served by wgpy/metrics.py: two nodes
on fake interfaces (a real Device, no TUN) against a real server on loopback; the node's
registry scraped over HTTP and parsed with prometheus-client's text parser."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import socket
from pathlib import Path

import aiohttp
from dnslib import DNSRecord
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from wgpy import metrics
from wgpy.endpoint import Endpoint
from wgpy.keys import key_to_base64
from wgpy.log import get_logger
from wgpy.mesh.client.daemon import DaemonOptions, options_pipe, read_options, serve
from wgpy.mesh.client.metrics import NodeMetrics
from wgpy.mesh.client.nameservice import NameService
from wgpy.mesh.client.node import NodeConfig
from wgpy.mesh.client.state import StateDir
from wgpy.mesh.server.metrics import ServerMetrics

from .conftest import ServerConfig, running
from .fakes import FakeHost, until
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
            peer.keepalives_sent = 3
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
            assert one(samples, "wgpy_node_peer_keepalives_sent_total", **labels) == 3
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


async def test_the_resolvers_queries_and_drops(config: ServerConfig, tmp_path: Path) -> None:
    """The node's resolver (nameservice.py, here on loopback): its answers, its forwards and
    its drops by reason, as the node's metrics."""
    async with running(config) as r:
        await r.admin.user("alice")
        auth = await r.admin.auth_key("alice", reusable=True)
        a, b = Node(r.url, tmp_path, "laptop", auth), Node(r.url, tmp_path, "phone", auth)
        node_a = await a.start()
        await b.start()
        names = node_a.names = NameService(
            "wgm0",
            FakeHost(),
            get_logger(),
            host_dns=None,
            port=0,
            service_addresses=[ipaddress.ip_interface("127.0.0.1/32")],
        )
        runner = await metrics.serve(NodeMetrics(node_a).registry, "127.0.0.1", 0)
        try:
            await until(lambda: b.public in node_a.device.peers, 3.0, "laptop sees phone")
            assert node_a.self_node is not None
            await names.start(node_a.self_node, node_a.peers.values())
            address = names.listening[0]
            query = DNSRecord.question("phone.alice.mesh.internal")
            reply = await asyncio.to_thread(query.send, *address, timeout=5)
            assert [str(rr.rdata) for rr in DNSRecord.parse(reply).rr] == [
                str(node_a.peers[b.public].allowed_ips[0].network_address)
            ]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.sendto(b"\x00" * 5, address)  # too short to be a query
                sock.sendto(b"\x00" * 600, address)  # longer than a query can be
            await until(lambda: sum(names.resolver.drops.values()) == 2, 3.0, "two drops")
            samples = await scrape(r.session, metrics.url_of(runner))
            assert one(samples, "wgpy_node_dns_queries_total", outcome="answered") == 1
            assert one(samples, "wgpy_node_dns_queries_total", outcome="forwarded") == 0
            assert one(samples, "wgpy_node_dns_names") == len(names.table.names) >= 4
            for reason in ("malformed", "oversized"):
                assert one(samples, "wgpy_node_drops_total", layer="dns", reason=reason) == 1
        finally:
            await names.close()
            await runner.cleanup()
            await a.stop()
            await b.stop()


def daemon_options(tmp_path: Path, metrics_listen: tuple[str, int] | None) -> DaemonOptions:
    return DaemonOptions(
        state_dir=tmp_path / "state",
        server_url="http://127.0.0.1:9",
        node=NodeConfig("wgm0", 41641, "box", "wgpy_auth_secret", measure_lifetime=False),
        run_dir=tmp_path / "run",
        metrics_listen=metrics_listen,
    )


def test_the_metrics_address_crosses_the_daemon_pipe(tmp_path: Path) -> None:
    for listen in (("127.0.0.1", 9091), ("::1", 0), None):
        options = daemon_options(tmp_path, listen)
        assert read_options(options_pipe(options, "info")) == (options, "info")
    older = daemon_options(tmp_path, None).to_json()
    del older["metrics_listen"]  # options from a wgpy up before metrics: none
    assert DaemonOptions.from_json(older).metrics_listen is None


async def test_a_taken_metrics_address_stops_the_daemon_before_it_registers(
    tmp_path: Path,
) -> None:
    StateDir(tmp_path / "state").load_or_create_key()
    reports: list[tuple[str | None, str]] = []
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        options = daemon_options(tmp_path, ("127.0.0.1", port))
        status = await serve(options, lambda error, line: reports.append((error, line)))
    assert status == 1
    assert reports == [
        (
            f"cannot serve metrics on 127.0.0.1:{port}: Address already in use; "
            "choose another --metrics-listen address",
            "",
        )
    ]
    assert not (tmp_path / "state" / "daemon.pid").exists()


def test_the_sample_dashboard_queries_only_metrics_that_exist() -> None:
    """examples/grafana-dashboard.json: valid JSON whose queries name the server's and the
    node's metrics as they are exposed (a renamed metric fails here)."""
    root = Path(__file__).resolve().parents[2]
    dashboard = json.loads((root / "examples" / "grafana-dashboard.json").read_text())
    families = {
        f.name: f.type for f in text_string_to_metric_families(ServerMetrics().text().decode())
    }
    families["wgpy_server_nodes"] = families["wgpy_server_map_streams"] = "gauge"
    families["wgpy_server_stun_drops"] = "counter"  # the hub's collector: a running server
    source = (root / "wgpy" / "mesh" / "client" / "metrics.py").read_text()
    for name in re.findall(r'"(wgpy_node_\w+)"', source):
        families[name] = (
            "counter" if f'CounterMetricFamily(\n            "{name}"' in source else "gauge"
        )
    exposed = set()
    for name, kind in families.items():
        exposed |= {name + "_total"} if kind == "counter" else {name}
        if kind == "histogram":
            exposed |= {name + "_bucket", name + "_count", name + "_sum"}
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(queries) > 10
    named = {name for query in queries for name in re.findall(r"\bwgpy_\w+", query)}
    assert named <= exposed, named - exposed
    assert {"wgpy_node_drops_total", "wgpy_server_auth_events_total"} <= named
