"""The node's metrics through the real daemon, as root: `wgpy up --metrics-listen` in a
network namespace (the lab of test_client_netns.py: a fake server and two nodes), scraped
over HTTP inside that namespace after a ping, and parsed with prometheus-client's parser;
`wgpy down` closes the listener."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from .fakes import FakeServer
from .test_client_netns import PYTHON, SUBNET, lab, log_of, sh, wait_for, wgpy  # noqa: F401

pytestmark = pytest.mark.root

PORT = 9464
SCRAPE = (
    "import sys, urllib.request\n"
    "with urllib.request.urlopen(sys.argv[1], timeout=2) as r:\n"
    "    sys.stdout.write(r.read().decode())\n"
)


def scrape(ns: str) -> list[Sample]:
    url = f"http://127.0.0.1:{PORT}/metrics"
    text = sh("ip", "netns", "exec", ns, PYTHON, "-c", SCRAPE, url).stdout
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(samples: list[Sample], metric: str, /, **labels: str) -> float:
    found = [s.value for s in samples if s.name == metric and labels.items() <= s.labels.items()]
    assert len(found) == 1, f"{metric} {labels}: {found}"
    return found[0]


def test_a_node_serves_its_metrics_from_the_daemon(lab: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    ifnames = {1: f"wx{os.getpid() % 100000}a", 2: f"wx{os.getpid() % 100000}b"}
    states = {i: tmp_path / f"state{i}" for i in (1, 2)}
    server = FakeServer(f"10.213.{SUBNET}.1", netns=lab["hub"]).start()
    try:
        auth = server.add_auth_key()
        for i in (1, 2):
            extra = ("--metrics-listen", f"127.0.0.1:{PORT}") if i == 1 else ()
            up = wgpy(
                lab[f"n{i}"], "up", "--login-server", server.url, "--auth-key", auth,
                "--state-dir", str(states[i]), "--interface", ifnames[i], "--hostname", f"n{i}",
                *extra,
            )  # fmt: skip
            assert up.returncode == 0, f"{up.stderr}\n{log_of(states[i])}"
        n1 = lab["n1"]
        wait_for(
            lambda: (
                sh(
                    "ip", "netns", "exec", n1, "ping", "-c", "1", "-W", "1", "100.64.0.2",
                    check=False,
                ).returncode
                == 0
            ),
            15,
            "ping n2 from n1",
        )  # fmt: skip
        assert "serving metrics" in log_of(states[1])
        samples = scrape(n1)
        assert value(samples, "wgpy_node_connected") == 1
        assert value(samples, "wgpy_node_peers") == 1
        peer = {"peer": server.nodes[2].public_key, "name": "n2"}
        assert value(samples, "wgpy_node_peer_received_bytes_total", **peer) > 0
        assert value(samples, "wgpy_node_peer_sent_bytes_total", **peer) > 0
        assert value(samples, "wgpy_node_peer_last_handshake_timestamp_seconds", **peer) > 1e9
        kinds = {s.labels["kind"]: s.value for s in samples if s.name == "wgpy_node_peer_path"}
        assert sum(kinds.values()) == 1 and set(kinds) == {"direct", "relay", "none"}
        down = wgpy(n1, "down", "--state-dir", str(states[1]))
        assert down.returncode == 0, down.stderr
        url = f"http://127.0.0.1:{PORT}/metrics"
        gone = sh("ip", "netns", "exec", n1, PYTHON, "-c", SCRAPE, url, check=False)
        assert gone.returncode != 0  # the listener went with the daemon
        wgpy(lab["n2"], "down", "--state-dir", str(states[2]))
    finally:
        server.stop()
